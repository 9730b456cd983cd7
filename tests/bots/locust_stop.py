"""A second locustfile for the Locust tests (``-f the_example.py,locust_stop.py``): no
users, only the end of the run once it has what the test checks, so that a run lasts
as long as this machine needs (under load, more than a fixed few seconds: every user's
login and join came after a ``-t 4s`` run had ended), with ``-t`` as its bound.

``CHAT_STOP_JOINS``: the ``join`` requests to wait for; ``CHAT_STOP_ROOM_DELIVERIES``:
the deliveries in rooms (``deliver pm, room of N``); ``CHAT_STOP_LOGINS``: the
``login`` requests; ``CHAT_STOP_PMS``: the ``pm`` requests, with more ``deliver pm``
than ``pm`` (each reached the other users). Counted in the run's statistics: a local
run's, or a master's, which has its workers' once they report them (every 3 s), so in
a distributed run only the master needs this file. Imported by Locust only, in its own
process (chatroom_bots.locust: Locust monkey-patches the standard library).
"""

from __future__ import annotations

import os
from typing import Any

import gevent
from locust import events
from locust.env import Environment
from locust.runners import MasterRunner

from chatroom_bots.locust import REQUEST_TYPE

JOINS = int(os.environ.get("CHAT_STOP_JOINS", "0"))
ROOM_DELIVERIES = int(os.environ.get("CHAT_STOP_ROOM_DELIVERIES", "0"))
LOGINS = int(os.environ.get("CHAT_STOP_LOGINS", "0"))
PMS = int(os.environ.get("CHAT_STOP_PMS", "0"))

# Set on the one hub of the process (greenlets, no threads): no lock.
_env: list[Environment] = []
_state = {"checking": False, "done": False}


def _init(environment: Environment, **_: Any) -> None:
    _env.append(environment)


def _count(environment: Environment, name: str) -> int:
    entry = environment.stats.entries.get((name, REQUEST_TYPE))
    return 0 if entry is None else entry.num_requests


def _enough(environment: Environment) -> bool:
    rooms = sum(
        entry.num_requests
        for (name, _), entry in environment.stats.entries.items()
        if name.startswith("deliver pm, room of ")
    )
    pms = _count(environment, "pm")
    return (
        _count(environment, "join") >= JOINS
        and rooms >= ROOM_DELIVERIES
        and _count(environment, "login") >= LOGINS
        and pms >= PMS
        and (PMS == 0 or _count(environment, "deliver pm") > pms)
    )


def _check() -> None:
    _state["checking"] = False
    runner = _env[0].runner if _env else None
    if _state["done"] or runner is None or not _enough(_env[0]):
        return
    _state["done"] = True
    runner.quit()


def _later() -> None:
    """Check once the event's other listeners are done (Locust's own counts the request
    or merges the report after this one), and not from inside a user's request."""
    if not _state["checking"] and not _state["done"]:
        _state["checking"] = True
        gevent.spawn(_check)


def _request(exception: BaseException | None = None, **_: Any) -> None:
    if exception is None and _env and not isinstance(_env[0].runner, MasterRunner):
        _later()


def _worker_report(**_: Any) -> None:
    _later()


events.init.add_listener(_init)  # type: ignore[no-untyped-call]
events.request.add_listener(_request)  # type: ignore[no-untyped-call]
events.worker_report.add_listener(_worker_report)  # type: ignore[no-untyped-call]
