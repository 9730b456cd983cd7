"""A login whose replay is running (docs/PROTOCOL.md §Resume): with a message log, a
login counts as done, and its result is passed out, once ``replay_done`` has come, so
that the hooks see what was missed first. The session counts the messages replayed
meanwhile and notes a ``replay_truncated``. No I/O; the session owns it (one owner, or
the session's lock)."""

from __future__ import annotations

from dataclasses import replace

from chatroom._sessionevents import Reply
from chatroom.events import LoginResult, Reconnected
from chatroom.protocol import LoginOk

__all__ = ["Replaying"]


class Replaying:
    """Login ``rid`` (a re-login if ``relogin``), answered by ``ok`` with ``result``."""

    __slots__ = ("count", "ok", "relogin", "result", "rid", "truncated")

    def __init__(self, rid: int, result: LoginResult, relogin: bool, ok: LoginOk) -> None:
        self.rid = rid
        self.result = result
        self.relogin = relogin
        self.ok = ok
        self.count = 0  # messages and room events replayed so far
        self.truncated = False  # the server could not replay everything

    def done(self) -> Reply | Reconnected:
        """What the session says of the login, now that its replay is done."""
        result = replace(self.result, replayed=self.count, replay_truncated=self.truncated)
        return Reconnected(result) if self.relogin else Reply(self.rid, self.ok, result)
