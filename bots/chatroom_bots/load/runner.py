"""The chat-load orchestrator: spawns workers, runs the phases, merges the results."""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import multiprocessing as mp
import os
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, Literal, TextIO, cast

from hdrh.histogram import HdrHistogram

from chatroom import ChatClient, ChatError, UsersChanged
from chatroom.hosts import parse_hosts
from chatroom.protocol import DEFAULT_PORT
from chatroom_bots.load import procstat
from chatroom_bots.load.stats import (
    make_names,
    merge_histograms,
    new_histogram,
    percentiles,
    record_counts,
)
from chatroom_bots.load.worker import SchedPolicy, WorkerSpec, sched_label, worker_main

log = logging.getLogger(__name__)

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
        bad = self.lost + self.errors
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


def check_reachable(cfg: LoadConfig, timeout: float = 5.0) -> None:
    """Raise RuntimeError naming the first of the server's addresses that does not take
    a connection ("connection refused: 127.0.0.1:5050"): without it every bot would fail
    to log in for that one reason, after the workers were spawned for nothing."""
    for host, port in parse_hosts(cfg.host, cfg.port):
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except TimeoutError:
            raise RuntimeError(f"no answer within {timeout:g} s: {host}:{port}") from None
        except OSError as exc:
            why = (exc.strerror or str(exc)).lower()
            raise RuntimeError(f"{why}: {host}:{port}") from None


def _plan(cfg: LoadConfig) -> list[WorkerSpec]:
    names = make_names(cfg.clients, cfg.seed)
    procs = max(1, min(cfg.processes, cfg.clients))
    senders = min(cfg.senders, cfg.clients) if cfg.mode not in ("logins", "churn") else 0
    rate = cfg.rate
    if cfg.mode == "hold":
        senders, rate = min(1, cfg.clients), cfg.probe_rate
    specs = []
    for w in range(procs):
        mine = list(range(w, cfg.clients, procs))  # round-robin: senders spread evenly
        specs.append(
            WorkerSpec(
                index=w,
                host=cfg.host,
                port=cfg.port,
                names=names,
                mine=mine,
                senders={i: i for i in mine if i < senders},
                total_senders=senders,
                rate=rate,
                pm_fraction=cfg.pm_fraction,
                size=cfg.size,
                password=cfg.password,
                seed=cfg.seed,
                tls=cfg.tls,
                ca_file=cfg.ca_file,
                login_concurrency=cfg.login_concurrency,
                relay_frames=cfg.relay_frames,
                churn=cfg.churn / procs,
                sched=cfg.sched,
                transport=cfg.transport,
                web_port=cfg.web_port,
            )
        )
    return specs


class Swarm:
    """Logged-in bots in worker processes, reused across load steps.

    ``with Swarm(cfg) as swarm: swarm.step(rate=500)`` ... Leaving the block tells every
    worker to stop and joins it (terminating one that will not stop)."""

    def __init__(self, cfg: LoadConfig) -> None:
        self.cfg = cfg
        self.pipes: list[Connection] = []
        self.procs: list[mp.process.BaseProcess] = []
        self.login = LoadResult(cfg)

    def __enter__(self) -> Swarm:
        cfg = self.cfg
        check_reachable(cfg)
        ctx = mp.get_context("spawn")
        try:
            for spec in _plan(cfg):
                parent, child = ctx.Pipe()
                p = ctx.Process(
                    target=worker_main, args=(spec, child), name=f"chat-load-{spec.index}"
                )
                p.start()
                child.close()
                self.pipes.append(parent)
                self.procs.append(p)
            limit = cfg.login_timeout or 120 + cfg.clients / 20
            ready = _collect(self.pipes, "ready", timeout=limit, result=self.login)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        r = self.login
        # From the first worker starting its logins to the last finishing (not spawn time).
        r.login_seconds = max(x["span"][1] for x in ready) - min(x["span"][0] for x in ready)
        r.logged_in = sum(x["logged_in"] for x in ready)
        r.login_failures = [f for x in ready for f in x["failed"]]
        r.login_ms = percentiles(merge_histograms(x["logins"] for x in ready))
        return self

    def __exit__(self, *exc: object) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(("stop", None))
        for p in self.procs:
            p.join(15)
            if p.is_alive():
                p.terminate()
                p.join(5)
        for pipe in self.pipes:
            pipe.close()

    def command(self, kind: str, answer: str, timeout: float) -> list[dict[str, Any]]:
        """Send ``kind`` to every worker; their ``answer`` payloads."""
        for pipe in self.pipes:
            pipe.send((kind, None))
        return _collect(self.pipes, answer, timeout=timeout, result=self.login)

    def step(
        self,
        rate: float,
        duration: float,
        *,
        delay: float = 0.0,
        progress: Callable[[dict[str, Any]], None] | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> LoadResult:
        """Send at ``rate`` for ``duration`` s (after ``delay`` s), drain, and report."""
        cfg = self.cfg
        result = LoadResult(cfg, logged_in=self.login.logged_in)
        t0 = time.monotonic() + 0.3 + delay
        end = t0 + duration
        for pipe in self.pipes:
            pipe.send(("go", (t0, end, rate)))
        ticks: dict[int, list[dict[str, Any]]] = {}
        # The server's /proc numbers, read once at (or just after) each second's start.
        server: dict[int, procstat.ProcSample] = {}
        finish = end + cfg.drain
        while time.monotonic() < finish and not (stop and stop()):
            second = math.floor(time.monotonic() - t0)
            if cfg.server_pid is not None and second not in server:
                got = procstat.sample(cfg.server_pid)
                if got is not None:
                    server[second] = got
            for pipe in _readable(self.pipes, 0.2):
                kind, payload = pipe.recv()
                if kind == "error":
                    result.warnings.append(payload)
                elif kind == "tick":
                    _tick(ticks, payload, t0, progress)
        for pipe in self.pipes:
            pipe.send(("report", None))
        finals = _collect(
            self.pipes,
            "final",
            timeout=30,
            result=result,
            on_other=lambda p: _tick(ticks, p, t0, None),
        )
        last = procstat.sample(cfg.server_pid)
        result.send_seconds = duration
        _merge(result, finals, [p for parts in ticks.values() for p in parts])
        result.timeline = _timeline(ticks, self.login.logged_in, server, finals)
        _server_totals(result, [s for k, s in sorted(server.items()) if k >= 0], last)
        _warn(result)
        return result


def run_load(
    cfg: LoadConfig,
    progress: Callable[[dict[str, Any]], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> LoadResult:
    """Run one load test (log in, one step, clean up); ``progress`` gets a row of numbers
    a second. Every worker is stopped and joined whatever happens."""
    with Swarm(cfg) as swarm:
        if cfg.mode == "logins" or swarm.login.login_failures:
            return swarm.login
        if cfg.mode == "churn":
            return _drop_all(swarm)
        if cfg.mode == "hold":
            result = swarm.step(
                cfg.probe_rate, cfg.probe_seconds, delay=cfg.duration, progress=progress, stop=stop
            )
        else:
            result = swarm.step(cfg.rate, cfg.duration, progress=progress, stop=stop)
        for key in ("login_seconds", "login_ms", "login_failures"):
            setattr(result, key, getattr(swarm.login, key))
        return result


class _Probe:
    """A client that is not dropped, watching the user list through its deltas."""

    def __init__(self, cfg: LoadConfig) -> None:
        self._cond = threading.Condition()
        self.count = 0  # guarded by _cond
        self.client = ChatClient(cfg.host, cfg.port, timeout=60, tls=cfg.tls, ca_file=cfg.ca_file)
        self.client.on_users(self._on_users)
        try:
            self.client.connect()
            self.count = len(self.client.login("chat_load_probe", cfg.password).users)
        except ChatError as exc:
            self.client.close()
            raise RuntimeError(
                f"the probe client could not log in ({exc}); the server must have room "
                f"for the {cfg.clients} bots and one more (chat-server --max-connections)"
            ) from exc

    def _on_users(self, event: UsersChanged) -> None:
        with self._cond:
            self.count = len(event.users)
            self._cond.notify_all()

    def wait_count(self, n: int, timeout: float) -> float | None:
        """Seconds until the list has ``n`` users, or None after ``timeout``."""
        began = time.monotonic()
        with self._cond:
            if not self._cond.wait_for(lambda: self.count == n, timeout):
                return None
        return time.monotonic() - began


class _Pinger:
    """Pings from a client every ``interval`` s on a thread of its own, while the block
    runs: the server's latency as a client that stays sees it."""

    # 100 ms: inside the server's default rate limit (10 commands/s, bursts of 20). At
    # 20 ms the probe went over it after its first 0.4 s, and in a long storm its later
    # pings came back rate_limited and counted as failures.
    def __init__(self, client: ChatClient, interval: float = 0.1) -> None:
        self._client = client
        self._interval = interval
        self._stop = threading.Event()
        # Written by the pinging thread only; read after __exit__ has joined it.
        self.hist = new_histogram()
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name="load-pinger", daemon=True)

    def __enter__(self) -> _Pinger:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(70)  # a ping waits at most the client's 60 s timeout

    def _run(self) -> None:
        while True:  # at least one ping, however short the block
            try:
                rtt = self._client.ping()
            except ChatError as exc:
                self.failures += 1
                log.warning("the probe's ping failed: %s", exc)
            else:
                self.hist.record_value(max(1, round(rtt * 1e6)))
            if self._stop.wait(self._interval):
                return


def _drop_all(swarm: Swarm) -> LoadResult:
    """chat-load churn --drop-all: every bot dropped at once (a reset each, no goodbye), the
    time until the server has let them all go; then every bot back, and the time until
    the last one is on the list again."""
    cfg, r = swarm.cfg, swarm.login
    result = LoadResult(
        cfg, logged_in=r.logged_in, login_seconds=r.login_seconds, login_ms=r.login_ms
    )
    n = r.logged_in
    probe = _Probe(cfg)
    try:
        if probe.wait_count(n + 1, 60) is None:
            result.warnings.append(f"the probe never saw all {n} bots on the list")
        threads_before = procstat.threads(cfg.server_pid)
        with _Pinger(probe.client) as pinger:
            began = time.monotonic()
            swarm.command("drop", "dropped", timeout=60)
            empty = probe.wait_count(1, 120 - (time.monotonic() - began))
            result.time_to_empty = None if empty is None else time.monotonic() - began
            if threads_before is not None:
                result.threads_gone = _wait_threads(
                    cfg.server_pid, threads_before - n, began, deadline=began + 120
                )
        result.drop_ping_ms = percentiles(pinger.hist)
        result.drop_pings = pinger.hist.get_total_count()
        result.drop_ping_failures = pinger.failures
        workers = [p.pid for p in swarm.procs]
        cpu_before = _cpu(cfg.server_pid), [_cpu(w) for w in workers]
        began = time.monotonic()
        back = swarm.command("rejoin", "rejoined", timeout=120 + n / 20)
        result.login_failures = [f for x in back for f in x["failed"]]
        full = probe.wait_count(n + 1, 120)
        result.time_to_full = None if full is None else time.monotonic() - began
        _rejoin_cpu(result, cpu_before, _cpu(cfg.server_pid), [_cpu(w) for w in workers])
        result.rejoin_login_seconds = max(x["span"][1] for x in back) - began
        result.logged_in = sum(x["logged_in"] for x in back)
    finally:
        probe.client.close()
    return result


def _cpu(pid: int | None) -> float | None:
    s = procstat.sample(pid)
    return None if s is None else s.cpu_seconds


def _rejoin_cpu(
    result: LoadResult,
    before: tuple[float | None, list[float | None]],
    server: float | None,
    workers: list[float | None],
) -> None:
    """The CPU the server and each generator process spent over the rejoin; a warning if
    a generator process was near a core's worth of it (then it set the pace, not the
    server)."""
    if server is not None and before[0] is not None:
        result.rejoin_server_cpu_seconds = server - before[0]
    spent = [
        b - a for a, b in zip(before[1], workers, strict=True) if a is not None and b is not None
    ]
    if len(spent) != len(workers):
        return  # not on Linux, or a worker gone: no figure rather than a wrong one
    result.rejoin_generator_cpu_seconds = spent
    wall = result.time_to_full
    if wall and max(spent) > 0.9 * wall:
        result.warnings.append(
            f"a generator process used {100 * max(spent) / wall:.0f} % of a core over "
            f"the rejoin: the generator may have set its pace, not the server"
        )


def _wait_threads(pid: int | None, target: int, began: float, deadline: float) -> float | None:
    """Seconds from ``began`` until the process has at most ``target`` threads (polled:
    a measurement of another process, which offers nothing to wait on)."""
    while time.monotonic() < deadline:
        n = procstat.threads(pid)
        if n is None or n <= target + 2:  # the probe's own thread, give or take
            return time.monotonic() - began
        time.sleep(0.02)
    return None


def _readable(pipes: list[Connection], timeout: float) -> list[Connection]:
    return cast(list[Connection], wait(pipes, timeout=timeout))


def _collect(
    pipes: list[Connection],
    kind: str,
    timeout: float,
    result: LoadResult,
    on_other: Callable[[Any], None] | None = None,
) -> list[dict[str, Any]]:
    got: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while len(got) < len(pipes):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"workers did not report {kind!r} within {timeout:.0f} s")
        for pipe in _readable([p for i, p in enumerate(pipes) if i not in got], left):
            try:
                k, payload = pipe.recv()
            except EOFError:
                raise RuntimeError("a worker died; see its log above") from None
            if k == kind:
                got[pipes.index(pipe)] = cast(dict[str, Any], payload)
            elif k == "error":
                raise RuntimeError(payload)
            elif on_other is not None:
                on_other(payload)
    return [got[i] for i in range(len(pipes))]


def _tick(
    ticks: dict[int, list[dict[str, Any]]],
    payload: dict[str, Any],
    t0: float,
    progress: Callable[[dict[str, Any]], None] | None,
) -> None:
    second = int(time.monotonic() - t0)  # negative while a hold step waits
    ticks.setdefault(second, []).append(payload)
    if progress is not None and len(ticks.get(second, [])) == 1 and second - 1 in ticks:
        progress(_row(second - 1, ticks[second - 1]))


def _row(second: int, parts: list[dict[str, Any]]) -> dict[str, Any]:
    pct = percentiles(_histogram(parts))
    return {
        "second": second,
        "sent": sum(p["sent"] for p in parts),
        "delivered": sum(p["delivered"] for p in parts),
        "duplicates": sum(p.get("duplicates", 0) for p in parts),
        "errors": sum(p["errors"] for p in parts),
        "disconnects": sum(p.get("disconnects", 0) for p in parts),
        "p50_ms": pct["p50"],
        "p99_ms": pct["p99"],
        "p999_ms": pct["p99.9"],
        "lag_ms": round(1000 * max((p.get("max_lag", 0.0) for p in parts), default=0.0), 2),
        "cpu": round(max((p["cpu"] for p in parts), default=0.0), 2),
    }


def _timeline(
    ticks: dict[int, list[dict[str, Any]]],
    logged_in: int,
    server: dict[int, procstat.ProcSample],
    finals: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """One row a second from the first send: the workers' ticks, what was expected and
    is still outstanding (a public message is expected by every other bot, a DM by one),
    what was lost of what was sent in that second, and, where the server was sampled,
    its CPU (% of a core) and RSS over that second.

    Loss comes from the workers' final counts (``finals``), by the intended send time on
    both sides, so a message still in flight when a second ends is not loss, and the
    rows' ``lost`` add up to the run's. ``outstanding`` counts by the second each tick
    arrived, and the workers tick at different moments: mid-run it is mostly in flight.
    """
    pm: Counter[int] = Counter()
    dm: Counter[int] = Counter()
    arrived: Counter[int] = Counter()
    for f in finals:
        pm.update(f["sent_by_second"]["pm"])
        dm.update(f["sent_by_second"]["dm"])
        arrived.update(f["seen_by_second"])
    rows = []
    expected = seen = 0
    for s in sorted(k for k in ticks.keys() | pm.keys() | dm.keys() if k >= 0):
        parts = ticks.get(s, [])
        row = _row(s, parts)
        if not row["delivered"]:  # no latency measured: a gap in the chart, not 0 ms
            row["p50_ms"] = row["p99_ms"] = row["p999_ms"] = None
        if not row["sent"]:
            row["lag_ms"] = None  # nothing was sent, so nothing was late
        if not parts:
            row["cpu"] = None  # no worker reported in this second
        tick_pm = sum(p.get("sent_pm", 0) for p in parts)
        row["expected"] = tick_pm * max(0, logged_in - 1) + (row["sent"] - tick_pm)
        expected += row["expected"]
        seen += row["delivered"] - row["duplicates"]
        row["outstanding"] = max(0, expected - seen)
        due = pm[s] * max(0, logged_in - 1) + dm[s]
        row["lost"] = max(0, due - arrived[s]) if s in pm or s in dm else None
        a, b = server.get(s), server.get(s + 1)
        if a is not None and b is not None and b.at > a.at:
            row["server_cpu"] = round(100 * (b.cpu_seconds - a.cpu_seconds) / (b.at - a.at), 1)
            row["server_rss_mib"] = round(b.rss_bytes / 2**20, 1)
        rows.append(row)
    return rows


def _server_totals(
    result: LoadResult, samples: list[procstat.ProcSample], last: procstat.ProcSample | None
) -> None:
    """The server's CPU from the step's first sample to the end, its largest RSS, and its
    RSS as the step began (every client logged in, nothing sent yet)."""
    if last is not None:
        samples = [*samples, last]
    if len(samples) < 2:
        return
    result.server_cpu_seconds = samples[-1].cpu_seconds - samples[0].cpu_seconds
    result.server_rss_mib = max(s.rss_bytes for s in samples) / 2**20
    result.server_idle_rss_mib = samples[0].rss_bytes / 2**20


def _histogram(parts: Iterable[dict[str, Any]]) -> HdrHistogram:
    """One histogram from the workers' ``{µs: deliveries}`` counts (workers count; this
    process, which only waits, builds histograms: see worker.Recorder)."""
    h = new_histogram()
    for p in parts:
        record_counts(h, p["latency"])
    return h


def _merge(result: LoadResult, finals: list[dict[str, Any]], ticks: list[dict[str, Any]]) -> None:
    for key in (
        "sent_pm",
        "sent_dm",
        "delivered",
        "duplicates",
        "out_of_order",
        "errors",
        "disconnects",
        "late_sends",
    ):
        setattr(result, key, sum(f[key] for f in finals))
    result.max_lag = max(f["max_lag"] for f in finals)
    result.generator_cpu_seconds = sum(f.get("cpu_seconds", 0.0) for f in finals)
    result.replayed = sum(f["replayed"] for f in finals)
    resumes = merge_histograms(f["resumes"] for f in finals)
    result.resumes = resumes.get_total_count()
    if result.resumes:
        result.resume_ms = percentiles(resumes)
    # The step's latencies: every second the workers reported, and the rest in finals.
    hist = _histogram([*ticks, *finals])
    result.latency_ms = percentiles(hist)
    if hist.get_total_count():
        result.latency_curve = [
            (p, hist.get_value_at_percentile(p) / 1000) for p in CURVE_PERCENTILES
        ]
    # A public message is expected by every other bot, a DM by its one target.
    result.expected = result.sent_pm * (result.logged_in - 1) + result.sent_dm


def _warn(result: LoadResult) -> None:
    if result.late_sends:
        result.warnings.append(
            f"the generator fell behind its schedule: {result.late_sends} sends over 10 ms "
            f"late (worst {result.max_lag * 1000:.0f} ms); latencies include that lag"
        )
    busy = [r for r in result.timeline if (r["cpu"] or 0) > 0.9]
    if busy:
        result.warnings.append(
            f"a generator process used over 90 % of a core in {len(busy)} of "
            f"{len(result.timeline)} seconds: the generator may be the bottleneck"
        )


def print_progress(out: TextIO = sys.stderr) -> Callable[[dict[str, Any]], None]:
    """Live progress: one rewritten line on a terminal, plain lines otherwise."""
    tty = out.isatty()

    def show(row: dict[str, Any]) -> None:
        # A second with no delivery has no latency: "-", not a p99 of 0 ms.
        p99 = f"{row['p99_ms']:>8.2f}" if row["delivered"] else f"{'-':>8}"
        line = (
            f"t={row['second']:>4}s  sent/s {row['sent']:>7}  delivered/s "
            f"{row['delivered']:>9}  p99 {p99} ms  errors {row['errors']}"
        )
        out.write(("\r" + line) if tty else line + "\n")
        out.flush()

    return show
