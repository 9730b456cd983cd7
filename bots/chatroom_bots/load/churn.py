"""``chat-load churn --drop-all``: every bot dropped at once, then all back, watched by a
probe client that stays (docs/PERFORMANCE.md, "Mass departures")."""

from __future__ import annotations

import logging
import threading
import time

from chatroom import ChatClient, ChatError, UsersChanged
from chatroom_bots.load import procstat
from chatroom_bots.load.result import LoadConfig, LoadResult
from chatroom_bots.load.stats import new_histogram, percentiles
from chatroom_bots.load.swarm import Swarm

log = logging.getLogger(__name__)


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


def drop_all(swarm: Swarm) -> LoadResult:
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
        rejoin_cpu(result, cpu_before, _cpu(cfg.server_pid), [_cpu(w) for w in workers])
        result.rejoin_login_seconds = max(x["span"][1] for x in back) - began
        result.logged_in = sum(x["logged_in"] for x in back)
    finally:
        probe.client.close()
    return result


def _cpu(pid: int | None) -> float | None:
    s = procstat.sample(pid)
    return None if s is None else s.cpu_seconds


def rejoin_cpu(
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
