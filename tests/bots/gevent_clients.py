"""Run by tests/bots/test_locust.py in a subprocess: ChatClient under gevent's monkey
patching, as Locust runs it. Prints one JSON line of what it saw.

Usage: python gevent_clients.py PORT CLIENTS
"""

from __future__ import annotations

# Locust's own first step, before anything else imports socket or threading.
from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from queue import Queue  # noqa: E402

import gevent  # noqa: E402

from chatroom import Broadcast, ChatClient  # noqa: E402


def main() -> None:
    port, n = int(sys.argv[1]), int(sys.argv[2])
    got: Queue[tuple[str, str, bool]] = Queue()
    clients = [ChatClient("127.0.0.1", port, timeout=20) for _ in range(n)]
    for i, c in enumerate(clients):

        def seen(event: Broadcast, me: str = f"g{i}") -> None:
            # A hook runs on a greenlet, and may block on an ack like any thread.
            got.put((me, event.message, gevent.getcurrent() is not gevent.get_hub()))

        c.on_broadcast(seen)
    # Every login at once, each on its own greenlet: they interleave on one OS thread.
    jobs = [
        gevent.spawn(lambda c=c, i=i: c.connect().login(f"g{i}", "gevent password"))
        for i, c in enumerate(clients)
    ]
    gevent.joinall(jobs, timeout=60, raise_error=True)
    receipt = clients[0].pm("hello from a greenlet")
    deliveries = [got.get(timeout=20) for _ in range(n - 1)]
    dm = clients[1].dm("g0", "direct")
    for c in clients:
        c.close(timeout=5)
    print(
        json.dumps(
            {
                "threads_left": threading.active_count(),
                "patched": monkey.is_module_patched("socket"),
                "seq": receipt.seq,
                "dm_to": dm.to,
                "receivers": sorted(me for me, _, _ in deliveries),
                "texts": sorted({text for _, text, _ in deliveries}),
                "on_greenlets": all(g for _, _, g in deliveries),
            }
        )
    )


if __name__ == "__main__":
    main()
