"""Out, owed: :class:`Pusher`, which writes the lines owed to IRC connections in
batches (chatroom_server.irc.outbox says which lines are owed, and why).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

log = logging.getLogger(__name__)

# s without owed lines after which the pusher's thread ends (the next owed line starts
# another): a server that no IRC client joins keeps no thread for it.
IDLE = 2.0
# s the pusher waits once woken before it takes what is owed: the JOINs of a burst made
# meanwhile (a few hundred lines each) share its sends, where a round for each JOIN
# would be a send per line again. What a room event's line waits at most for it.
GATHER = 0.002


class Owing(Protocol):
    """What the pusher needs of an outbox (chatroom_server.irc.outbox.IrcOutbox)."""

    owed: bool
    name: str

    def push(self) -> None: ...


class Pusher:
    """Writes the lines owed to IRC connections (chatroom_server.irc.outbox): one
    thread, started when a line is owed and ended after ``IDLE`` s without any, that
    takes every connection owed something and pushes it (``Outbox.push``: one ``send`` for all its
    queued lines, or none if another thread holds its lock, which then writes them).

    Threads: ``_owed`` is appended to by any thread without a lock and taken only by
    the pusher's thread, by copying it and deleting the copied prefix (as
    ``Outbox._pending``); ``_lock`` guards ``_running`` (whether the thread is there or
    about to be), taken only when ``_wake`` was clear: so once per round of the
    pusher, not once per line. No line is stranded: the thread ends only under
    ``_lock``, after seeing ``_owed`` empty there, and whoever appends after that finds
    ``_wake`` clear, takes ``_lock`` and starts another. An outbox's ``owed`` flag keeps
    it in ``_owed`` once a round: cleared before its push, so a line queued after the
    push began finds it clear and appends it again."""

    def __init__(self) -> None:
        self._owed: list[Owing] = []
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._running = False
        self.thread: threading.Thread | None = None  # the last one started

    def owe(self, ob: Owing) -> None:
        """``ob`` has lines queued: have them written soon. Any thread, never blocks
        (``_lock`` is held for a few steps at most)."""
        if not ob.owed:
            ob.owed = True
            self._owed.append(ob)
        if self._wake.is_set():
            return  # the pusher's next round takes it
        self._wake.set()
        with self._lock:
            start = not self._running
            self._running = True
        if start:
            self.thread = threading.Thread(target=self._run, name="chat-irc-pusher", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        owed, wake = self._owed, self._wake
        while True:
            if wake.wait(IDLE):
                time.sleep(GATHER)  # a bounded pause: more owed lines, fewer sends
            wake.clear()
            taken = owed[:]
            del owed[: len(taken)]  # what was appended since stays (class docstring)
            if not taken:
                with self._lock:
                    if not owed:
                        self._running = False
                        return
                continue
            for ob in taken:
                ob.owed = False
                try:
                    ob.push()
                except Exception:  # one connection's failure must not strand the rest
                    log.exception("writing the lines owed to %s failed", ob.name)
