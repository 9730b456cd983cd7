"""The chat-load orchestrator: spawns workers, runs the phases, merges the results."""

from __future__ import annotations

import contextlib
import csv
import json
import multiprocessing as mp
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Literal, TextIO, cast

from hdrh.histogram import HdrHistogram

from chatroom import ChatClient, UsersChanged
from chatroom.protocol import DEFAULT_PORT
from chatroom_bots.load.stats import (
    make_names,
    merge_histograms,
    new_histogram,
    percentiles,
    record_counts,
)
from chatroom_bots.load.worker import WorkerSpec, worker_main

Mode = Literal["run", "logins", "hold", "churn"]


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
    server_pid: int | None = None  # churn --drop-all: watch the server's threads go


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
    send_seconds: float = 0.0
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
            lines.append(
                f"  logins        {self.logged_in} in {self.login_seconds:.2f} s "
                f"({rate:.0f}/s); connect to user list p50 "
                f"{self.login_ms.get('p50', 0):.1f} ms, p99 "
                f"{self.login_ms.get('p99', 0):.1f} ms"
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
        if c.mode == "churn":
            lines += [
                f"  drop-all      {self.logged_in} dropped at once: user list empty after "
                f"{_secs(self.time_to_empty)}, their threads gone after "
                f"{_secs(self.threads_gone)}",
                f"  rejoin        all logged in again, every one on the list after "
                f"{_secs(self.time_to_full)}",
            ]
        lines += [f"  warning: {w}" for w in self.warnings]
        lines.append("  result        " + ("OK" if self.ok else "FAILED"))
        return "\n".join(lines)

    def write_json(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2, default=str)

    def write_csv(self, path: str) -> None:
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, ["second", "sent", "delivered", "errors", "p99_ms", "cpu"])
            w.writeheader()
            for row in self.timeline:
                w.writerow({k: row.get(k) for k in w.fieldnames})


# 0, 10, ..., 90, then 99, 99.9, ... 99.9999: even steps on a log(1 / (1 - p)) axis.
CURVE_PERCENTILES: tuple[float, ...] = (
    *(float(p) for p in range(0, 100, 10)),
    *(100 - 10.0**-k for k in range(0, 4)),
    99.9999,
)


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


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
        finish = end + cfg.drain
        while time.monotonic() < finish and not (stop and stop()):
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
        result.send_seconds = duration
        _merge(result, finals, [p for parts in ticks.values() for p in parts])
        result.timeline = [row for row in _timeline(ticks) if row["second"] >= 0]
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
        self.client.connect()
        self.count = len(self.client.login("chat_load_probe", cfg.password).users)

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


def _drop_all(swarm: Swarm) -> LoadResult:
    """chat-load churn --drop-all: every bot dropped at once (a reset each, no goodbye), the
    time until the server has let them all go; then every bot back, and the time until
    the last one is on the list again."""
    cfg, r = swarm.cfg, swarm.login
    result = LoadResult(cfg, logged_in=r.logged_in)
    n = r.logged_in
    probe = _Probe(cfg)
    try:
        if probe.wait_count(n + 1, 60) is None:
            result.warnings.append(f"the probe never saw all {n} bots on the list")
        threads_before = _threads(cfg.server_pid)
        began = time.monotonic()
        swarm.command("drop", "dropped", timeout=60)
        empty = probe.wait_count(1, 120 - (time.monotonic() - began))
        result.time_to_empty = None if empty is None else time.monotonic() - began
        if threads_before is not None:
            result.threads_gone = _wait_threads(
                cfg.server_pid, threads_before - n, began, deadline=began + 120
            )
        began = time.monotonic()
        back = swarm.command("rejoin", "rejoined", timeout=120 + n / 20)
        result.login_failures = [f for x in back for f in x["failed"]]
        full = probe.wait_count(n + 1, 120)
        result.time_to_full = None if full is None else time.monotonic() - began
        result.login_seconds = max(x["span"][1] for x in back) - began
        result.logged_in = sum(x["logged_in"] for x in back)
    finally:
        probe.client.close()
    return result


def _threads(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _wait_threads(pid: int | None, target: int, began: float, deadline: float) -> float | None:
    """Seconds from ``began`` until the process has at most ``target`` threads (polled:
    a measurement of another process, which offers nothing to wait on)."""
    while time.monotonic() < deadline:
        n = _threads(pid)
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
        "errors": sum(p["errors"] for p in parts),
        "p50_ms": pct["p50"],
        "p99_ms": pct["p99"],
        "p999_ms": pct["p99.9"],
        "cpu": round(max(p["cpu"] for p in parts), 2),
    }


def _timeline(ticks: dict[int, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [_row(s, ticks[s]) for s in sorted(ticks)]


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
    busy = [r for r in result.timeline if r["cpu"] > 0.9]
    if busy:
        result.warnings.append(
            f"a generator process used over 90 % of a core in {len(busy)} of "
            f"{len(result.timeline)} seconds: the generator may be the bottleneck"
        )


def print_progress(out: TextIO = sys.stderr) -> Callable[[dict[str, Any]], None]:
    """Live progress: one rewritten line on a terminal, plain lines otherwise."""
    tty = out.isatty()

    def show(row: dict[str, Any]) -> None:
        line = (
            f"t={row['second']:>4}s  sent/s {row['sent']:>7}  delivered/s "
            f"{row['delivered']:>9}  p99 {row['p99_ms']:>8.2f} ms  errors {row['errors']}"
        )
        out.write(("\r" + line) if tty else line + "\n")
        out.flush()

    return show
