"""One chat-load worker process: logs in its share of the bots, sends on schedule, and
records every delivery.

Threads: each sending bot is a ChatClient with one receive thread (``inline_hooks=True``:
the hooks below run there); every other bot lives in the worker's
:class:`~chatroom_bots.load.receivers.ReceiverPool`, one epoll thread for thousands of
connections (its docstring says why). The main thread logs in and then runs the send
schedule; a control thread reads commands from the parent; a tick thread reports once a
second. ``Recorder._lock`` guards every counter and histogram, since deliveries are
recorded from the receive threads and the pool at once.
"""

from __future__ import annotations

import heapq
import json
import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from chatroom import Broadcast, ChatClient, ChatError, DirectMessage, Disconnect, ServerNotice
from chatroom_bots.load.receivers import ReceiverPool
from chatroom_bots.load.stats import new_histogram, pack, record, unpack

log = logging.getLogger(__name__)


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


class Recorder:
    """Counters and histograms of one worker; safe from every receive thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.latency = new_histogram()
        self.tick_latency = new_histogram()
        self.logins = new_histogram()
        self.delivered = self.tick_delivered = 0
        self.sent_pm = self.sent_dm = self.tick_sent = 0
        self.duplicates = self.out_of_order = 0
        self.errors = self.tick_errors = 0
        self.disconnects = 0
        self.late_sends = 0
        self.max_lag = 0.0
        self.closing = False
        self._last: dict[tuple[int, int], int] = {}

    def delivery(self, receiver: int, message: str) -> None:
        parsed = unpack(message)
        if parsed is None:
            return
        sender, seq, intended = parsed
        micros = int(time.monotonic() * 1e6) - intended
        key = (receiver, sender)
        with self._lock:
            # Only the second's histogram: tick() folds it into the total (one record per
            # delivery, on the hot path of the whole generator).
            record(self.tick_latency, micros)
            self.delivered += 1
            self.tick_delivered += 1
            last = self._last.get(key, -1)
            if seq > last:
                self._last[key] = seq
            elif seq == last:
                self.duplicates += 1
            else:
                self.out_of_order += 1

    def login_time(self, micros: int) -> None:
        with self._lock:
            record(self.logins, micros)

    def error(self, _: object = None) -> None:
        with self._lock:
            self.errors += 1
            self.tick_errors += 1

    def disconnected(self, event: Disconnect) -> None:
        with self._lock:
            if not self.closing:
                self.disconnects += 1
                self.errors += 1
                self.tick_errors += 1

    def sent(self, pm: bool, lag: float) -> None:
        with self._lock:
            if pm:
                self.sent_pm += 1
            else:
                self.sent_dm += 1
            self.tick_sent += 1
            if lag > 0.01:
                self.late_sends += 1
            self.max_lag = max(self.max_lag, lag)

    def tick(self) -> dict[str, Any]:
        with self._lock:
            out = {
                "sent": self.tick_sent,
                "delivered": self.tick_delivered,
                "errors": self.tick_errors,
                "latency": self.tick_latency.encode(),
            }
            self.tick_sent = self.tick_delivered = self.tick_errors = 0
            self.latency.add(self.tick_latency)
            self.tick_latency.reset()
        return out

    def final(self, reset: bool = False) -> dict[str, Any]:
        with self._lock:
            self.latency.add(self.tick_latency)
            self.tick_latency.reset()
            out = {
                "sent_pm": self.sent_pm,
                "sent_dm": self.sent_dm,
                "delivered": self.delivered,
                "duplicates": self.duplicates,
                "out_of_order": self.out_of_order,
                "errors": self.errors,
                "disconnects": self.disconnects,
                "late_sends": self.late_sends,
                "max_lag": self.max_lag,
                "latency": self.latency.encode(),
            }
            if reset:
                self.latency.reset()
                self.delivered = self.sent_pm = self.sent_dm = 0
                self.duplicates = self.out_of_order = self.errors = self.disconnects = 0
                self.late_sends = 0
                self.max_lag = 0.0
            return out


def _relay_frame(sender: str, text: str) -> bytes:
    return (
        json.dumps(
            {"command": "pm", "type": "broadcast", "from": sender, "message": text, "ts": 0}
        ).encode()
        + b"\n"
    )


def worker_main(spec: WorkerSpec, pipe: Connection) -> None:
    logging.basicConfig(level=logging.WARNING)
    Worker(spec, pipe).run()


class Worker:
    def __init__(self, spec: WorkerSpec, pipe: Connection) -> None:
        self.spec = spec
        self.pipe = pipe
        self._pipe_lock = threading.Lock()  # Connection.send is not thread-safe
        self.rec = Recorder()
        self.clients: dict[int, ChatClient] = {}
        self.pool: ReceiverPool | None = None
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
                if self.spec.senders and self.rate > 0:
                    self.send_schedule()
                while not self.report.wait(0.5) and not self.stop.is_set():
                    pass  # drain
                if self.stop.is_set():
                    break
                self.report.clear()
                self.send("tick", {**self.rec.tick(), "cpu": self._cpu()})
                final = self.rec.final(reset=True)
                final["cpu_seconds"] = time.process_time()
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
        # Receivers go to the epoll pool; senders (and, with TLS, everyone) are ChatClients.
        pooled = [] if s.tls else [i for i in s.mine if i not in s.senders]
        as_clients = [i for i in s.mine if s.tls or i in s.senders]
        self.pool = ReceiverPool(
            s.host,
            s.port,
            s.names,
            s.password,
            self.rec,
            concurrency=s.login_concurrency,
            timeout=s.connect_timeout,
        )
        self.pool.start(pooled)

        def login(idx: int) -> ChatClient | str:
            """A logged-in client, or why not."""
            c = ChatClient(
                s.host,
                s.port,
                inline_hooks=True,
                timeout=s.connect_timeout,
                keepalive=60.0,
                tls=s.tls,
                ca_file=s.ca_file,
            )

            def deliver(event: Broadcast | DirectMessage, receiver: int = idx) -> None:
                self.rec.delivery(receiver, event.message)

            c.on_broadcast(deliver)
            c.on_dm(deliver)
            c.on_notice(self._notice)
            c.on_disconnect(self.rec.disconnected)
            started = time.perf_counter()
            try:
                c.connect()
                c.login(s.names[idx], s.password)
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
                self.go.set()
            elif kind == "report":
                self.report.set()
            elif kind == "stop":
                self.stop.set()
                return

    def send_schedule(self) -> None:
        """Open loop: sender of rank k sends its j-th message at t0 + (k + j*S) / rate,
        whatever happened to the previous one."""
        s = self.spec
        rng = random.Random(s.seed * 1000 + s.index)
        step = 1.0 / self.rate
        # Sequence numbers continue across steps: receivers check order per sender.
        heap = [
            (self.t0 + rank * step, idx, self.next_seq.get(idx, 0))
            for idx, rank in s.senders.items()
        ]
        heapq.heapify(heap)
        others = list(range(len(s.names)))
        while heap:
            due, idx, seq = heap[0]
            if due >= self.end:
                break
            wait = due - time.monotonic()
            if wait > 0 and self.stop.wait(wait):
                return
            client = self.clients.get(idx)
            heapq.heapreplace(heap, (due + s.total_senders * step, idx, seq + 1))
            self.next_seq[idx] = seq + 1
            if client is None:
                continue
            text = pack(idx, seq, int(due * 1e6), s.size)
            pm = rng.random() < s.pm_fraction
            try:
                if pm and s.relay_frames:
                    client._send(_relay_frame(s.names[idx], text))
                elif pm:
                    client.pm(text, wait=False)
                else:
                    target = rng.choice(others)
                    while target == idx:
                        target = rng.choice(others)
                    client.dm(s.names[target], text, wait=False)
            except ChatError:
                self.rec.error()
                continue
            self.rec.sent(pm, time.monotonic() - due)

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
