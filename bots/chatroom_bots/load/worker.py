"""One chat-load worker process: logs in its share of the bots, sends on schedule, and
records every delivery.

Threads: every bot lives in the worker's :class:`~chatroom_bots.load.pool.BotPool`, one
epoll thread for thousands of connections that also sends on the step's
:class:`SendSchedule` (its docstring says why). With TLS each bot is a ChatClient instead,
with one receive thread (``inline_hooks=True``: the hooks below run there), and the main
thread plays the schedule. The main thread logs in and then waits for each step; a
control thread reads commands from the parent; a tick thread reports once a second. The
Recorder's locks guard every counter and histogram, since deliveries may be recorded
from several threads at once.
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Literal, get_args

from chatroom import Broadcast, ChatClient, ChatError, DirectMessage, ServerNotice
from chatroom.hosts import parse_hosts
from chatroom.protocol import DmCommand, PmCommand, encode
from chatroom_bots.load.pool import BotPool
from chatroom_bots.load.recorder import Recorder
from chatroom_bots.load.rooms import RoomPlan, reconcile
from chatroom_bots.load.stats import pack

log = logging.getLogger(__name__)

SchedPolicy = Literal["batch", "normal"]
SCHED_POLICIES: tuple[SchedPolicy, ...] = get_args(SchedPolicy)


def set_sched(policy: SchedPolicy) -> None:
    """Put this thread, and every thread it starts after, under ``policy``.

    ``batch`` (Linux's SCHED_BATCH, same CPU share, no privilege needed): a bot woken by
    a delivery does not preempt the task running on its core. On one machine that task
    is often the server's fan-out, halfway through a pass to thousands of recipients,
    and the preemption stretches the very pass whose latency is measured, while clients
    on their own machines would take nothing from it. At 10,000 clients and 10 msg/s it
    took the p99 from 84-101 ms to 73-81 (docs/PERFORMANCE.md, "The generator yields
    on wake-ups"). Elsewhere than Linux the policy stays as it is."""
    batch = getattr(os, "SCHED_BATCH", None)
    if policy == "normal" or batch is None:
        return
    try:
        os.sched_setscheduler(0, batch, os.sched_param(0))
    except OSError as exc:  # a sandbox that forbids it: measure anyway, and say so
        log.warning("cannot run the generator under SCHED_BATCH: %s", exc)


def sched_label(policy: SchedPolicy) -> str:
    """What :func:`set_sched` makes of ``policy`` here, for reports."""
    return "SCHED_BATCH" if policy == "batch" and hasattr(os, "SCHED_BATCH") else "normal"


@dataclass
class WorkerSpec:
    index: int
    host: str
    port: int
    names: list[str]  # every bot's name; a bot's number is its position here
    mine: list[int]  # the bots this worker runs
    senders: dict[int, int]  # sender bot -> its rank among all senders (schedule phase)
    total_senders: int
    rate: float  # messages per second, all senders together
    pm_fraction: float
    size: int
    password: str
    seed: int
    tls: bool = False
    ca_file: str | None = None
    login_concurrency: int = 32
    connect_timeout: float = 30.0
    # Send public messages as frames that are also broadcasts, so a relay that forwards
    # lines unparsed (bench/raw_relay.py) delivers them; servers ignore the extra fields.
    relay_frames: bool = False
    churn: float = 0.0  # this worker's bots cut and resumed per second while sending
    sched: SchedPolicy = "batch"  # the worker's scheduling policy (see ``set_sched``)
    transport: str = "tcp"  # "ws": bots over WebSocket to web_port; "mixed": every other
    web_port: int | None = None
    # --rooms: who is in which room (every worker has the whole plan, for its checks);
    # None: everyone in lobby only, as a protocol-v1 client.
    rooms: RoomPlan | None = None


def _relay_frame(sender: str, text: str) -> bytes:
    return (
        json.dumps(
            {"command": "pm", "type": "broadcast", "from": sender, "message": text, "ts": 0}
        ).encode()
        + b"\n"
    )


class SendSchedule:
    """One step's sends, open loop: sender of rank k sends its j-th message at
    t0 + (k + j*S) / rate, whatever happened to the previous one. No I/O: whoever plays
    it (the BotPool's loop, or the main thread for TLS ChatClients) asks when the next
    send is due and pops it then.

    ``next_seq`` (bot -> its next sequence number, kept by the worker so numbers continue
    across steps and receivers can check order) belongs to the thread playing the
    schedule until ``finished`` is set.
    """

    def __init__(
        self, spec: WorkerSpec, t0: float, end: float, rate: float, next_seq: dict[int, int]
    ) -> None:
        self._spec = spec
        self._end = end
        self._interval = spec.total_senders / rate  # between two sends of one bot
        self._rng = random.Random(spec.seed * 1000 + spec.index)
        self._next_seq = next_seq
        self._heap = [
            (t0 + rank / rate, idx, next_seq.get(idx, 0)) for idx, rank in spec.senders.items()
        ]
        # --rooms: a sender's messages go to its rooms in turn (by its sequence number).
        plan = spec.rooms
        self._rooms_of = plan.rooms_of(len(spec.names)) if plan is not None else None
        heapq.heapify(self._heap)
        self.finished = threading.Event()

    def next_due(self) -> float | None:
        if not self._heap or self._heap[0][0] >= self._end:
            return None
        return self._heap[0][0]

    def pop(self) -> tuple[int, bytes, int | None]:
        """The next send: (sender, frame, the room it goes to: 0 without --rooms, for
        lobby; None for a DM)."""
        s = self._spec
        due, idx, seq = self._heap[0]
        heapq.heapreplace(self._heap, (due + self._interval, idx, seq + 1))
        self._next_seq[idx] = seq + 1
        intended = int(due * 1e6)
        if self._rng.random() < s.pm_fraction:
            if self._rooms_of is not None and s.rooms is not None:
                mine = self._rooms_of[idx]
                room = mine[seq % len(mine)]
                text = pack(idx, seq, intended, s.size, room)
                return idx, encode(PmCommand(message=text, room=s.rooms.names[room])), room
            text = pack(idx, seq, intended, s.size)
            if s.relay_frames:
                return idx, _relay_frame(s.names[idx], text), 0
            return idx, encode(PmCommand(message=text)), 0
        text = pack(idx, seq, intended, s.size)
        target = self._rng.randrange(len(s.names) - 1)
        if target >= idx:
            target += 1  # anyone but the sender
        return idx, encode(DmCommand(to=s.names[target], message=text)), None


def worker_main(spec: WorkerSpec, pipe: Connection) -> None:
    logging.basicConfig(level=logging.WARNING)
    set_sched(spec.sched)  # before any thread starts: they inherit it
    Worker(spec, pipe).run()


class Worker:
    def __init__(self, spec: WorkerSpec, pipe: Connection) -> None:
        self.spec = spec
        self.pipe = pipe
        self._pipe_lock = threading.Lock()  # Connection.send is not thread-safe
        self.rec = Recorder(spec.rooms)
        self.clients: dict[int, ChatClient] = {}
        self.pool: BotPool | None = None
        self.go = threading.Event()
        self.report = threading.Event()
        self.stop = threading.Event()
        self.t0 = 0.0
        self.end = 0.0
        self.rate = spec.rate
        self.next_seq: dict[int, int] = {}

    def send(self, kind: str, payload: Any) -> None:
        with self._pipe_lock:
            self.pipe.send((kind, payload))

    def run(self) -> None:
        try:
            began = time.monotonic()
            failed = self.login_all()
            self.send(
                "ready",
                {
                    "logged_in": len(self.clients) + (self.pool.logged_in if self.pool else 0),
                    "failed": failed,
                    "logins": self.rec.logins.encode(),
                    "span": (began, time.monotonic()),
                },
            )
            threading.Thread(target=self.control, name="control", daemon=True).start()
            ticker = threading.Thread(target=self.ticks, name="ticks", daemon=True)
            ticker.start()
            # Steps: go (t0, end, rate) -> send on schedule -> keep receiving until the
            # parent asks for the report -> final counters (then reset) -> next step.
            while True:
                while not self.go.wait(0.5) and not self.stop.is_set():
                    pass
                if self.stop.is_set():
                    break
                self.go.clear()
                cpu0 = time.process_time()
                if self.spec.senders and self.rate > 0:
                    self.play_schedule()
                while not self.report.wait(0.5) and not self.stop.is_set():
                    pass  # drain
                if self.stop.is_set():
                    break
                self.report.clear()
                if self.pool is not None and not self.pool.wait_caught_up(30.0):
                    self.send("error", f"worker {self.spec.index}: bots still resuming")
                self.send("tick", {**self.rec.tick(), "cpu": self._cpu()})
                final = self.rec.final(reset=True)
                final["cpu_seconds"] = time.process_time() - cpu0  # this step's
                self.send("final", final)
            self.rec.closing = True
        except Exception as exc:  # report, then die: the parent decides what it means
            log.exception("worker %d failed", self.spec.index)
            self.send("error", f"worker {self.spec.index}: {exc!r}")
        finally:
            self.close_all()

    # -------------------------------------------------------------- phases

    def login_all(self) -> list[str]:
        s = self.spec
        # Every bot goes to the epoll pool; with TLS every bot is a ChatClient instead.
        pooled = [] if s.tls else list(s.mine)
        as_clients = list(s.mine) if s.tls else []
        plan = s.rooms
        rooms_of = plan.rooms_of(len(s.names)) if plan is not None else None
        wanted = (
            {i: tuple(plan.names[r] for r in rooms_of[i]) for i in s.mine}
            if plan is not None and rooms_of is not None
            else None
        )
        self.pool = BotPool(
            s.host,
            s.port,
            s.names,
            s.password,
            self.rec,
            concurrency=s.login_concurrency,
            timeout=s.connect_timeout,
            churn=s.churn,
            keep=frozenset(s.senders),
            seed=s.seed * 1000 + s.index,
            transport=s.transport,
            web_port=s.web_port,
            rooms=wanted,
        )
        self.pool.start(pooled)

        def login(idx: int) -> ChatClient | str:
            """A logged-in client, or why not."""
            addresses = parse_hosts(s.host, s.port)
            c = ChatClient(
                hosts=addresses[idx % len(addresses) :] + addresses[: idx % len(addresses)],
                port=s.port,
                inline_hooks=True,
                timeout=s.connect_timeout,
                keepalive=60.0,
                tls=s.tls,
                ca_file=s.ca_file,
                rooms=wanted is not None,
            )

            def deliver(event: Broadcast | DirectMessage, receiver: int = idx) -> None:
                room = event.room if isinstance(event, Broadcast) else None
                self.rec.delivery(receiver, event.message, room)

            c.on_broadcast(deliver)
            c.on_dm(deliver)
            c.on_notice(self._notice)
            c.on_disconnect(self.rec.disconnected)
            started = time.perf_counter()
            try:
                c.connect()
                c.login(s.names[idx], s.password)
                if wanted is not None:
                    self._join_rooms(c, wanted[idx])
            except ChatError as exc:
                c.close(timeout=2)
                return f"{s.names[idx]}: {exc}"
            self.rec.login_time(int((time.perf_counter() - started) * 1e6))
            return c

        failed: list[str] = []
        with ThreadPoolExecutor(max(1, min(s.login_concurrency, len(as_clients)))) as pool:
            # Results are gathered here, on this thread: self.clients has one writer.
            for idx, got in zip(as_clients, pool.map(login, as_clients), strict=True):
                if isinstance(got, str):
                    failed.append(got)
                else:
                    self.clients[idx] = got
        return failed + self.pool.wait_logged_in(self.stop)

    @staticmethod
    def _join_rooms(client: ChatClient, rooms: tuple[str, ...]) -> None:
        """--rooms with TLS: put a ChatClient bot in exactly its rooms of the plan."""
        if not client.rooms_on:
            raise ChatError("the server offers no rooms (it runs with --history off?)")
        leave, join = reconcile((r.name for r in client.rooms), rooms)
        for room in leave:
            client.part(room)
        for room in join:
            client.join(room)

    def _notice(self, event: ServerNotice) -> None:
        self.rec.error()

    def control(self) -> None:
        while True:
            try:
                kind, payload = self.pipe.recv()
            except (EOFError, OSError):
                self.stop.set()  # the parent is gone
                return
            if kind == "go":
                self.t0, self.end, self.rate = payload
                self.rec.begin(self.t0)
                self.go.set()
            elif kind == "report":
                self.report.set()
            elif kind in ("drop", "rejoin") and self.pool is not None:
                self._drop_or_rejoin(kind, self.pool)
            elif kind == "stop":
                self.stop.set()
                return

    def _drop_or_rejoin(self, kind: str, pool: BotPool) -> None:
        """chat-load churn --drop-all: every bot of this worker at once (control thread)."""
        began = time.monotonic()
        before = len(pool.failures)
        if kind == "drop":
            pool.drop_all()
        else:
            pool.rejoin_all()
        failures = pool.wait_logged_in(self.stop)[before:]
        self.send(
            "dropped" if kind == "drop" else "rejoined",
            {"logged_in": pool.logged_in, "failed": failures, "span": (began, time.monotonic())},
        )

    def play_schedule(self) -> None:
        """Send this step's messages; return when the last is out (or on stop)."""
        schedule = SendSchedule(self.spec, self.t0, self.end, self.rate, self.next_seq)
        if self.pool is not None and not self.spec.tls:
            self.pool.play(schedule)
            while not schedule.finished.wait(0.5) and not self.stop.is_set():
                pass
            return
        # With TLS the bots are ChatClients, and this thread sends for them.
        while (due := schedule.next_due()) is not None:
            wait = due - time.monotonic()
            if wait > 0 and self.stop.wait(wait):
                return
            idx, frame, room = schedule.pop()
            client = self.clients.get(idx)
            if client is None:
                continue  # it failed to log in
            try:
                client.send_frames(frame)
            except ChatError:
                self.rec.error()
                continue
            self.rec.sent(room, time.monotonic() - due, due)

    def ticks(self) -> None:
        while not self.stop.wait(1.0):
            self.send("tick", {**self.rec.tick(), "cpu": self._cpu()})

    _last_cpu = (0.0, 0.0)

    def _cpu(self) -> float:
        """This process's CPU use since the last call, as a fraction of one core."""
        now, cpu = time.monotonic(), time.process_time()
        last_now, last_cpu = self._last_cpu
        self._last_cpu = (now, cpu)
        return (cpu - last_cpu) / (now - last_now) if last_now else 0.0

    def close_all(self) -> None:
        self.rec.closing = True
        if self.pool is not None:
            self.pool.close()
        clients = list(self.clients.values())
        with ThreadPoolExecutor(32) as pool:
            list(pool.map(lambda c: c.close(timeout=3), clients))
