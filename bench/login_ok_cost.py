"""What building one login_ok costs the server with N users online, under its lock.

    .venv/bin/python bench/login_ok_cost.py [--users 10000] [--logins 2000] [--repeat 7]

A login_ok carries every online name (docs/PROTOCOL.md §login); in a rejoin of 10,000
every login builds one of some 130 KB while holding the server's lock. This builds the
frame as ``ChatServer._join`` does (a users_delta client: the cached names array of
:class:`~chatroom_server.roster.SortedNames` with the new name spliced in) and prints
this thread's CPU per frame, the best of ``--repeat`` passes. For an A/B, run it under
another checkout's code (``PYTHONPATH=OTHER/server:OTHER/sdk``); a checkout without
``SortedNames.frame_with`` is timed the way it built the frame then.
"""

from __future__ import annotations

import argparse
import time
from typing import cast

import msgspec

from chatroom.protocol import PROTOCOL_VERSION, Feature, LoginOk, encode
from chatroom_bots.load.stats import make_names
from chatroom_server.roster import SortedNames


def login_ok(name: str, users: bytes) -> LoginOk:
    return LoginOk(
        username=name,
        new_user=False,
        users=cast(tuple[str, ...], msgspec.Raw(users)),
        features=(Feature.USERS_DELTA.value,),
        version=PROTOCOL_VERSION,
        seq=123_456,
        epoch="0123456789abcdef",
        replay=False,
        id=7,
    )


def measure(users: int, logins: int, repeat: int) -> tuple[float, int]:
    everyone = make_names(users + 1, seed=1)
    names = SortedNames()
    for n in everyone[:users]:
        names.add(n)
    newcomer = everyone[users]
    frame_with = getattr(names, "frame_with", None)

    def build() -> bytes:
        if frame_with is not None:
            return cast(bytes, frame_with(newcomer, encode(login_ok(newcomer, b"[]"))))
        return encode(login_ok(newcomer, names.json_with(newcomer)))  # before

    best = float("inf")
    for _ in range(repeat):
        t0 = time.thread_time()
        for _ in range(logins):
            build()
        best = min(best, (time.thread_time() - t0) / logins * 1e6)
    return best, len(build())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--logins", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    cost, size = measure(args.users, args.logins, args.repeat)
    print(f"one login_ok with {args.users} users ({size} bytes): {cost:.1f} µs")


if __name__ == "__main__":
    main()
