"""The ``pm`` and ``dm`` requests a client session sent and the server has not answered
yet (docs/PROTOCOL.md §Idempotent sends): each with a cid, unique to its sender across
processes, and its frame, which goes out again on the next connection after the
re-login; the server stores each once and answers it with the original ack. Only the
sends a reconnect carried over go out again at the re-login's ``login_ok``: one requested
after the new connection was made was written on it already (F11, docs/RELIABILITY.md).
A send the server refused as ``too_large`` is named among them and never sent again
(:func:`chatroom._limits.too_large`). No I/O; the session owns it (one owner, or the
session's lock)."""

from __future__ import annotations

import secrets

from chatroom._limits import too_large
from chatroom._sessionevents import Refused
from chatroom.protocol import ServerLimits

__all__ = ["Unacked"]


class Unacked:
    """The unanswered ``pm``/``dm``, by request id, in the order they were requested."""

    __slots__ = ("_carried", "_cid_prefix", "_cids", "_sends")

    def __init__(self) -> None:
        self._sends: dict[int, tuple[str, bytes]] = {}  # request id -> (cid, frame)
        # What the latest reconnect carried over (carry()): only these are sent again.
        self._carried: frozenset[int] = frozenset()
        self._cid_prefix = secrets.token_hex(6)  # cids unique per sender, across processes
        self._cids = 0

    def new_cid(self) -> str:
        self._cids += 1
        return f"{self._cid_prefix}-{self._cids}"

    def add(self, rid: int, cid: str, frame: bytes) -> None:
        self._sends[rid] = (cid, frame)

    def answered(self, rid: int) -> None:
        """Acked, refused or given up on: never sent again. (A refused send resent after
        a reconnect would be delivered after its caller was told it was not.)"""
        self._sends.pop(rid, None)

    def carry(self) -> None:
        """A new connection is made: the sends unanswered now are the ones to send again
        after its login (:meth:`resends`)."""
        self._carried = frozenset(self._sends)

    def keep(self, resend: bool) -> frozenset[int]:
        """The connection is gone: with ``resend`` (the caller reconnects and logs in
        again) every unanswered send stays, to go out again; without, all are dropped.
        The ids kept."""
        if not resend:
            self._sends.clear()
        return frozenset(self._sends)

    def resends(self) -> bytes:
        """The frames to send again after a re-login's ``login_ok``, in request order."""
        return b"".join(data for rid, (_, data) in self._sends.items() if rid in self._carried)

    def too_large(self, limits: ServerLimits | None, message: str) -> Refused | None:
        """The refusal of the send the server's ``too_large`` (``message``) was about,
        now forgotten; None if no send waiting can be it."""
        refused = too_large(limits, self._sends, message)
        if refused is not None:
            del self._sends[refused.rid]
        return refused
