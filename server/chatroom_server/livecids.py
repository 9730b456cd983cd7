"""The cids of public messages that are never stored: a guest room's (docs/PROTOCOL.md
§Guest rooms). A stored message's cid is checked by the message log, which finds a
resend by it (chatroom_server.messagelog, ``Duplicate``); a guest room's message gets
no row, so without this a client's resend after a reconnect (the SDK resends what was
not acked, with the same cid) would reach the room twice.

The last :data:`KEPT` such messages are remembered, as (sender, cid) -> (room, text):
a resend comes within seconds of the original, and a guest room lives for a session.

Threads: one owner, the fan-out lock's holder (chatroom_server.fanout checks a room's
messages under it); no lock of its own.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from chatroom.errors import ErrorCode, RequestId
from chatroom.protocol import ErrorEvent, encode, username_key
from chatroom.rooms import room_key

__all__ = ["KEPT", "LiveCids", "conflict"]

KEPT: Final = 10_000


class LiveCids:
    """See the module docstring."""

    def __init__(self, kept: int = KEPT) -> None:
        self._kept = kept
        self._seen: OrderedDict[tuple[str, str], tuple[str, str]] = OrderedDict()

    def check(self, sender: str, cid: str, room: str, text: str) -> bool | None:
        """None: a new cid, remembered now; True: a resend of the message it was
        given with (ack it again, send it not); False: it was given with another
        message (``cid_conflict``)."""
        key = (username_key(sender), cid)
        what = (room_key(room), text)
        got = self._seen.get(key)
        if got is not None:
            return got == what
        self._seen[key] = what
        if len(self._seen) > self._kept:
            self._seen.popitem(last=False)
        return None


def conflict(rid: RequestId) -> bytes:
    """The answer to a guest room's message whose cid its sender gave another one
    (docs/PROTOCOL.md §Idempotent sends: ``cid_conflict``)."""
    text = "this cid was used for another message; this one was not delivered"
    return encode(ErrorEvent(code=ErrorCode.CID_CONFLICT, message=text, id=rid))
