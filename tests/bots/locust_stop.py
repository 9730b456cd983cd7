"""A second locustfile for the Locust tests (``-f the_example.py,locust_stop.py``): no
users, only the end of the run once it has what the test checks, so that a run lasts
as long as this machine needs (under load, more than a fixed few seconds: every user's
login and join came after a ``-t 4s`` run had ended), with ``-t`` as its bound.

``CHAT_STOP_JOINS``: the ``join`` requests to wait for; ``CHAT_STOP_ROOM_DELIVERIES``:
the deliveries in rooms (``deliver pm, room of N``). Imported by Locust only, in its
own process (chatroom_bots.locust: Locust monkey-patches the standard library).
"""

from __future__ import annotations

import os
from typing import Any

import gevent
from locust import events
from locust.env import Environment

JOINS = int(os.environ.get("CHAT_STOP_JOINS", "0"))
ROOM_DELIVERIES = int(os.environ.get("CHAT_STOP_ROOM_DELIVERIES", "0"))

# Counted on the one hub of a headless run (greenlets, no threads): no lock.
_seen = {"join": 0, "room": 0}
_env: list[Environment] = []


def _init(environment: Environment, **_: Any) -> None:
    _env.append(environment)


def _request(name: str, exception: BaseException | None = None, **_: Any) -> None:
    if exception is not None or not _env:
        return
    if name == "join":
        _seen["join"] += 1
    elif name.startswith("deliver pm, room of "):
        _seen["room"] += 1
    else:
        return
    runner = _env[0].runner
    if _seen["join"] >= JOINS and _seen["room"] >= ROOM_DELIVERIES and runner is not None:
        _seen["join"] = -(10**9)  # once
        gevent.spawn(runner.quit)  # not from inside the user's own request


events.init.add_listener(_init)  # type: ignore[no-untyped-call]
events.request.add_listener(_request)  # type: ignore[no-untyped-call]
