"""The nemesis: a seeded schedule of faults, and the thread that carries it out.

:func:`schedule` turns a seed into a list of faults, one after another with quiet gaps
between them; the same seed, duration and target give the same list, so a run that
found something can be replayed (the traffic's choices are seeded too, but thread
timing is the machine's: a replay brings the same faults at the same moments, not the
same interleaving to the microsecond).

The faults (docs/RELIABILITY.md has what each exercises):

- ``kill``: SIGKILL a node; restarted (same port, same node name) after the hold.
- ``pause``: SIGSTOP a node, SIGCONT after the hold: shorter than the node timeout
  (``short``) or past it (``long``; for the single server, past the clients' keepalive
  and timeout, so they give up on it and reconnect).
- ``kill-redis``, ``kill-pg``: SIGKILL Redis (it comes back empty) or every PostgreSQL
  process (it comes back through crash recovery).
- ``part-redis``, ``part-pg``, ``isolate``: one node cut from Redis, from PostgreSQL, or
  from both, through its own links: ``reset`` (connections refused and reset) or
  ``blackhole`` (nothing moves; nothing is closed).
- ``cut``: every client connection to a node reset at once.
- ``midframe``: for the hold, client connections to a node are cut inside a frame, in
  one direction, when a message, ack or login crosses.
- ``disk-full``: the single server's tmpfs filled to the last byte for the hold;
  ``disk-full-kill`` also SIGKILLs the server while the disk is full.

Threads: :class:`Nemesis` runs on its own thread; it owns the target's processes and
the switchboard's modes while the run lasts. Between faults, and every second during
one, it restarts any process that should run and does not (a node that failed to start
because a service it needs was down), and notes a process that exited by itself.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tests.nemesis.history import Fault, History
from tests.nemesis.proxy import Switchboard
from tests.nemesis.services import ChatNode, Postgres, Proc, Redis, ServiceError, Tmpfs

__all__ = ["FaultSpec", "Nemesis", "Target", "schedule"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaultSpec:
    at: float  # seconds after the run began
    kind: str
    target: str  # "node2", "redis", "pg", "disk"
    hold: float  # seconds until it is healed (0: nothing to heal)
    detail: str = ""

    def describe(self) -> str:
        extra = f" ({self.detail})" if self.detail else ""
        hold = f" for {self.hold:.1f} s" if self.hold else ""
        return f"{self.at:7.1f} s  {self.kind} {self.target}{extra}{hold}"


class Target(Protocol):
    """What the nemesis breaks: the run's processes and links."""

    name: str
    nodes: list[ChatNode]
    redis: Redis | None
    pg: Postgres | None
    tmpfs: Tmpfs | None
    switchboard: Switchboard
    node_timeout: float

    def client_link(self, node: int) -> str: ...
    def redis_link(self, node: int) -> str: ...
    def pg_link(self, node: int) -> str: ...
    def switchboard_links(self) -> list[str]: ...


def schedule(
    seed: int,
    duration: float,
    target: str,
    nodes: int,
    node_timeout: float,
    disk: bool,
) -> list[FaultSpec]:
    """The faults of a run (see the module docstring)."""
    rng = random.Random(f"{seed}/nemesis")
    menu: list[tuple[str, float]] = [
        ("kill", 3),
        ("pause-short", 1.5),
        ("pause-long", 2),
        ("cut", 2),
        ("midframe", 2),
    ]
    if target == "cluster":
        menu += [
            ("kill-redis", 1.5),
            ("kill-pg", 1.5),
            ("part-redis", 2),
            ("part-pg", 2),
            ("isolate", 1),
        ]
    elif disk:
        menu += [("disk-full", 3), ("disk-full-kill", 1)]
    kinds, weights = zip(*menu, strict=True)
    out: list[FaultSpec] = []
    t = 2.0  # a quiet start: every client logged in and sending
    end = duration - 3.0  # and a quiet end before the final heal
    nt = node_timeout
    while True:
        kind = rng.choices(kinds, weights)[0]
        node = f"node{rng.randint(1, nodes)}"
        if kind == "kill":
            spec = FaultSpec(t, "kill", node, rng.uniform(0.5, 8.0))
        elif kind == "pause-short":
            spec = FaultSpec(t, "pause", node, rng.uniform(0.2, 0.6 * nt), "short")
        elif kind == "pause-long":
            spec = FaultSpec(t, "pause", node, rng.uniform(1.5 * nt, 3.0 * nt), "long")
        elif kind == "cut":
            spec = FaultSpec(t, "cut", node, 0.0)
        elif kind == "midframe":
            spec = FaultSpec(
                t, "midframe", node, rng.uniform(2.0, 8.0), rng.choice(("down", "down", "up"))
            )
        elif kind in ("kill-redis", "kill-pg"):
            spec = FaultSpec(t, kind, kind[5:], rng.uniform(0.5, 8.0))
        elif kind in ("part-redis", "part-pg", "isolate"):
            spec = FaultSpec(
                t, kind, node, rng.uniform(1.0, 10.0), rng.choice(("reset", "blackhole"))
            )
        else:  # disk-full, disk-full-kill
            spec = FaultSpec(t, kind, "disk", rng.uniform(1.0, 10.0))
        if spec.at + spec.hold > end:
            break
        out.append(spec)
        t = spec.at + spec.hold + rng.uniform(1.0, 5.0)
    return out


class Nemesis:
    """Carries out a schedule on a target (see the module docstring)."""

    def __init__(self, target: Target, history: History, specs: list[FaultSpec]) -> None:
        self.target = target
        self.history = history
        self.specs = specs
        self.stop = threading.Event()
        # Processes down on purpose (killed and not yet due back): name -> Proc.
        self.down: set[str] = set()
        self.crashes = 0
        self._ready: dict[str, bool] = {}  # process name -> it started and was ready
        self.thread = threading.Thread(target=self._main, name="nemesis", daemon=True)

    def _note(self, kind: str, target: str, phase: str, detail: str = "") -> None:
        h = self.history
        h.add(Fault(t=h.now(), kind=kind, target=target, phase=phase, detail=detail))

    def start(self) -> None:
        self.thread.start()

    def _main(self) -> None:
        for spec in self.specs:
            while not self._wait(spec.at - self.history.now()):
                pass
            if self.stop.is_set():
                return
            try:
                self._fault(spec)
            except Exception as exc:  # a broken fault must not end the schedule
                log.exception("fault %s failed", spec)
                self._note("error", spec.target, "note", f"{type(exc).__name__}: {exc}")
        while not self._wait(3600.0):
            pass

    def _wait(self, seconds: float) -> bool:
        """Wait up to ``seconds`` (at most one), looking after the processes; True
        once the time is up or the nemesis is stopped."""
        if seconds <= 0 or self.stop.is_set():
            return True
        self.stop.wait(min(1.0, seconds))
        self.tend()
        return seconds <= 1.0 or self.stop.is_set()

    def _hold(self, seconds: float) -> None:
        end = self.history.now() + seconds
        while not self._wait(end - self.history.now()):
            pass

    # ------------------------------------------------------------------ the processes

    def processes(self) -> list[tuple[str, Proc, ChatNode | Redis | Postgres]]:
        t = self.target
        out: list[tuple[str, Proc, ChatNode | Redis | Postgres]] = []
        if t.redis is not None:
            out.append(("redis", t.redis.proc, t.redis))
        if t.pg is not None:
            out.append(("pg", t.pg.proc, t.pg))
        out += [(n.name, n.proc, n) for n in t.nodes]
        return out

    def tend(self) -> None:
        """Restart what should run and does not; note what exited by itself."""
        for name, proc, service in self.processes():
            if name in self.down or proc.running:
                continue
            if self._ready.get(name):
                status = proc.proc.returncode if proc.proc is not None else None
                if status == 1 and _refused_to_start(proc.log_path):
                    # docs/CLUSTER.md: a node that cannot reach Redis or PostgreSQL as
                    # it starts exits 1 (a service down, or just back): no crash.
                    self._note("restart", name, "note", "exited 1: a service it needs is down")
                else:
                    self.crashes += 1
                    self._note("crash", name, "note", f"exited by itself with status {status}")
            self._ready[name] = False
            try:
                service.start()
            except ServiceError as exc:
                self._note("restart", name, "note", f"failed: {exc}")
                continue
            self._ready[name] = True
            self._note("restart", name, "note", "up")

    def mark_ready(self) -> None:
        """Every process is up at the start."""
        for name, proc, _ in self.processes():
            self._ready[name] = proc.running

    # ------------------------------------------------------------------ the faults

    def _fault(self, spec: FaultSpec) -> None:
        t = self.target
        self._note(spec.kind, spec.target, "start", spec.detail)
        if spec.kind == "kill":
            self._kill(spec.target, spec.hold)
        elif spec.kind == "pause":
            node = self._node(spec.target)
            node.proc.signal(signal.SIGSTOP)
            try:
                self._hold(spec.hold)
            finally:
                node.proc.signal(signal.SIGCONT)
        elif spec.kind == "cut":
            n = t.switchboard.cut(t.client_link(self._index(spec.target)))
            self._note("cut", spec.target, "note", f"{n} connections reset")
        elif spec.kind == "midframe":
            link = t.client_link(self._index(spec.target))
            t.switchboard.cut_midframe(link, spec.detail, count=1000)
            try:
                self._hold(spec.hold)
            finally:
                t.switchboard.disarm(link)
            self._note(
                "midframe",
                spec.target,
                "note",
                f"{t.switchboard.link(link).cuts} cuts on this link so far",
            )
        elif spec.kind in ("kill-redis", "kill-pg"):
            self._kill(spec.target, spec.hold)
        elif spec.kind in ("part-redis", "part-pg", "isolate"):
            i = self._index(spec.target)
            links = {
                "part-redis": [t.redis_link(i)],
                "part-pg": [t.pg_link(i)],
                "isolate": [t.redis_link(i), t.pg_link(i)],
            }[spec.kind]
            for name in links:
                t.switchboard.set_mode(name, "down" if spec.detail == "reset" else "blackhole")
            try:
                self._hold(spec.hold)
            finally:
                for name in links:
                    t.switchboard.set_mode(name, "up")
        elif spec.kind in ("disk-full", "disk-full-kill"):
            disk = t.tmpfs
            assert disk is not None
            written = disk.fill()
            self._note("disk-full", "disk", "note", f"filled with {written} bytes")
            try:
                if spec.kind == "disk-full-kill":
                    self._kill("node1", spec.hold)
                else:
                    self._hold(spec.hold)
            finally:
                disk.free()
        self._note(spec.kind, spec.target, "end", spec.detail)

    def _kill(self, name: str, hold: float) -> None:
        proc = {n: p for n, p, _ in self.processes()}[name]
        self.down.add(name)
        try:
            proc.kill()
            self._hold(hold)
        finally:
            self.down.discard(name)
            self._ready[name] = False
        self.tend()  # back now, not at the next tick

    def _node(self, name: str) -> ChatNode:
        return self.target.nodes[self._index(name)]

    @staticmethod
    def _index(name: str) -> int:
        return int(name.removeprefix("node")) - 1

    # ------------------------------------------------------------------ the end

    def heal(self) -> None:
        """Stop the schedule and bring everything back: links up, processes running
        (and not stopped), the disk freed."""
        self.stop.set()
        self.thread.join(60)
        if self.thread.is_alive():
            log.error("the nemesis thread did not stop")
        t = self.target
        for link in list(t.switchboard_links()):
            t.switchboard.set_mode(link, "up")
            t.switchboard.disarm(link)
        for _, proc, _ in self.processes():
            if proc.paused:
                proc.signal(signal.SIGCONT)
        if t.tmpfs is not None:
            t.tmpfs.free()
        self.down.clear()
        self.tend()
        self._note("heal", "all", "note", "every link up, every process running")


# What chat-server prints as it exits 1 when a service is unreachable at start-up.
_REFUSALS = ("chat-server: cannot reach Redis", "chat-server: cannot connect to PostgreSQL")


def _refused_to_start(log_path: Path) -> bool:
    """The process's log ends with a node's start-up refusal: a service unreachable."""
    try:
        with log_path.open("rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 4096))
            tail = f.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return False
    return bool(tail) and tail[-1].startswith(_REFUSALS)
