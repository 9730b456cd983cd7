"""chat-load's swarm: worker processes of logged-in bots, driven step by step."""

from __future__ import annotations

import contextlib
import math
import multiprocessing as mp
import socket
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any, cast

from chatroom.hosts import parse_hosts
from chatroom_bots.load import procstat, tally
from chatroom_bots.load.result import LoadConfig, LoadResult
from chatroom_bots.load.rooms import RoomPlan, plan_rooms
from chatroom_bots.load.stats import make_names, merge_histograms, percentiles
from chatroom_bots.load.worker import WorkerSpec, worker_main


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


def _plan(cfg: LoadConfig, rooms: RoomPlan | None) -> list[WorkerSpec]:
    names = make_names(cfg.clients, cfg.seed)
    procs = max(1, min(cfg.processes, cfg.clients))
    senders = min(cfg.senders, cfg.clients) if cfg.mode not in ("logins", "churn") else 0
    rate = cfg.rate
    if cfg.mode == "hold":
        senders, rate = min(1, cfg.clients), cfg.probe_rate
    # Without rooms the senders are bots 0..S-1, spread evenly over the workers by the
    # round-robin below; with rooms, one member of each room first (RoomPlan.senders).
    order = rooms.senders(senders, cfg.clients) if rooms is not None else range(senders)
    rank = {bot: k for k, bot in enumerate(order)}
    specs = []
    for w in range(procs):
        mine = list(range(w, cfg.clients, procs))
        specs.append(
            WorkerSpec(
                index=w,
                host=cfg.host,
                port=cfg.port,
                names=names,
                mine=mine,
                senders={i: rank[i] for i in mine if i in rank},
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
                rooms=rooms,
            )
        )
    return specs


class Swarm:
    """Logged-in bots in worker processes, reused across load steps.

    ``with Swarm(cfg) as swarm: swarm.step(rate=500)`` ... Leaving the block tells every
    worker to stop and joins it (terminating one that will not stop)."""

    def __init__(self, cfg: LoadConfig) -> None:
        self.cfg = cfg
        # --rooms: who is in which room (ValueError for settings no plan can meet).
        self.rooms = (
            plan_rooms(cfg.clients, cfg.rooms, cfg.room_sizes, cfg.rooms_per_bot, cfg.seed)
            if cfg.rooms
            else None
        )
        self.pipes: list[Connection] = []
        self.procs: list[mp.process.BaseProcess] = []
        self.login = LoadResult(cfg)

    def __enter__(self) -> Swarm:
        cfg = self.cfg
        check_reachable(cfg)
        ctx = mp.get_context("spawn")
        try:
            for spec in _plan(cfg, self.rooms):
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
                    tally.add_tick(ticks, payload, t0, progress)
        for pipe in self.pipes:
            pipe.send(("report", None))
        finals = _collect(
            self.pipes,
            "final",
            timeout=30,
            result=result,
            on_other=lambda p: tally.add_tick(ticks, p, t0, None),
        )
        last = procstat.sample(cfg.server_pid)
        result.send_seconds = duration
        tally.merge(result, finals, [p for parts in ticks.values() for p in parts], self.rooms)
        result.timeline = tally.timeline(
            ticks, self.login.logged_in, server, finals, rooms=self.rooms is not None
        )
        tally.server_totals(result, [s for k, s in sorted(server.items()) if k >= 0], last)
        tally.warn(result)
        return result


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
