"""A node's connections to the cluster's Redis, and whether it answers (docs/CLUSTER.md).

Every part of the bus that talks to Redis says here when a call failed
(:meth:`Link.set_up` False); only the consumer, whose blocking read goes on trying,
says when Redis is back. While it is down, sends and logins get ``unavailable``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis

from chatroom_server.messagelog import StorageError

log = logging.getLogger(__name__)


class Link:
    """Two connections to Redis at ``url``: ``r`` for the scripts and commands of every
    thread, ``rx`` the consumer's own (its blocking reads wait up to 0.5 s)."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout  # how long ``r`` waits for a reply before it gives up
        opts: dict[str, Any] = {
            "decode_responses": True,
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
        }
        self.r = redis.Redis.from_url(url, **opts)
        self.rx = redis.Redis.from_url(url, **{**opts, "socket_timeout": timeout + 1.0})
        self._lock = threading.Lock()  # guards _up and outages
        self._up = True
        self.outages = 0  # times Redis became unreachable (metrics); under _lock
        self._up_event = threading.Event()  # set while _up: for wait_available()
        self._up_event.set()
        # Redis's clock (TIME, in s) minus time.monotonic() here, at most what it is
        # (measured after the reply came): for deadlines(). Under _lock.
        self._offset: float | None = None

    @property
    def available(self) -> bool:
        return self._up

    def set_up(self, up: bool, why: object = None) -> None:
        with self._lock:
            changed = self._up != up
            self._up = up
            if changed and not up:
                self.outages += 1
            if up:
                self._up_event.set()
            else:
                self._up_event.clear()
        if changed and up:
            log.warning("Redis at %s is reachable again", self.url)
        elif changed:
            log.error(
                "Redis at %s is unreachable (%s); sends and logins get 'unavailable'", self.url, why
            )

    def wait_available(self, timeout: float) -> bool:
        """Wait until Redis is reachable (again); False after ``timeout`` s."""
        return self._up_event.wait(timeout)

    def sync_clock(self) -> None:
        """Measure Redis's clock against this node's (RedisError if unreachable).
        The heartbeat does it at every beat, so a step of Redis's clock is followed
        within a beat."""
        sent = time.monotonic()
        sec, usec = self.r.time()
        got = time.monotonic()
        with self._lock:
            # A slow reply (a partition healing) would set the deadlines early by as
            # much, and timely claims would be refused: only a first one is kept.
            if self._offset is None or got - sent < self.timeout / 4:
                self._offset = sec + usec / 1e6 - got

    def deadline(self) -> int:
        """For a script sent now on ``r``: a time on Redis's clock (µs) at or before
        the moment this node stops waiting for its reply (``timeout`` after it was
        sent). A script that runs later than that was given up on: a partition held it
        (docs/RELIABILITY.md F8). RedisError if the clock was never measured and
        Redis cannot be reached now."""
        with self._lock:
            offset = self._offset
        if offset is None:
            self.sync_clock()
            with self._lock:
                offset = self._offset
            assert offset is not None
        return int((time.monotonic() + offset + self.timeout) * 1e6)

    def ready(self) -> None:
        """Raise StorageError while Redis is known to be down: a send then gets
        ``unavailable`` instead of an ack for a message nobody can be told about."""
        if not self._up:
            raise StorageError("the cluster's Redis is unreachable")

    def close(self) -> None:
        self.r.close()
        self.rx.close()
