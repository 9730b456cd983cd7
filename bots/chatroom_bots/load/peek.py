"""chat-load's fast path: what its bots read of the server's frames, and how cheaply.

Nearly all of a run's frames are deliveries, acks and pings' answers, and the generator
shares its cores with the server it measures. :func:`peek_block` turns a read's whole
lines into one JSON array (newlines to commas) that one msgspec call decodes into
:class:`Peek` (only ``type``, ``message``, ``seq``, ``replay`` and ``room``; the rest
skipped in C): a fraction of the SDK's decode per frame (docs/PERFORMANCE.md, "The
generator" and "A cheaper read in the generator"). Whatever it cannot peek (None) takes
the SDK's decode in :class:`~chatroom_bots.load.pool.BotPool`.
"""

from __future__ import annotations

import msgspec

from chatroom import Broadcast, DirectMessage
from chatroom.protocol import EVENT_NAMES, Ack, split_block

__all__ = ["ACK", "DELIVERIES", "IGNORED", "Peek", "peek_block"]


class Peek(msgspec.Struct):
    """What the fast path reads of a server frame."""

    type: str = ""
    message: str | None = None
    seq: int | None = None
    replay: bool = False
    room: str | None = None  # a broadcast's room on a v2 connection (chat-load --rooms)


_peek_decoder = msgspec.json.Decoder(list[Peek | None])
_peek_one = msgspec.json.Decoder(Peek | None)
# How the server writes these frames (msgspec puts the tag first; PROTOCOL.md §Frames).
# Only a shortcut: a frame written otherwise takes the longer way to the same result.
_DELTA_START = b'{"type":"users_delta",'
_LOGIN_OK_START = b'{"type":"login_ok",'
_A_DELTA = Peek(type="users_delta")


def _peek_line(frame: bytes) -> Peek | None:
    """One frame for the fast path (None: the SDK's decode), without parsing a delta or
    a login_ok, the frames that carry names by the thousand."""
    if frame.startswith(_DELTA_START):
        return _A_DELTA
    if frame.startswith(_LOGIN_OK_START):
        return None  # the SDK's decode, which skips the names once
    try:
        return _peek_one.decode(frame)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None


DELIVERIES = frozenset({Broadcast.__struct_config__.tag, DirectMessage.__struct_config__.tag})
ACK = Ack.__struct_config__.tag
# Answers to pings, and the user list's deltas: the bots keep no list
# (``track_users=False``), so the SDK would decode a delta's names to drop them, 10,000
# bots x every name of a rejoin storm (docs/PERFORMANCE.md, "Rejoins and the generator").
IGNORED = frozenset({"pong", "users_delta"})
assert DELIVERIES | IGNORED | {ACK} <= EVENT_NAMES


def peek_block(block: bytes) -> tuple[list[bytes] | None, list[Peek | None]]:
    """A read's complete lines (``block``, each ending in a newline) as (its frames, if
    they had to be split, and a Peek or None for each). A blank line or anything but one
    JSON value per line fails the decode or the count, and then every frame is None."""
    if b'"users' in block:
        # The user list (a login_ok with every name, a storm's deltas): big, and nothing
        # the bots keep. Line by line, so that these are not parsed twice.
        frames = split_block(block)
        return frames, [_peek_line(frame) for frame in frames]
    try:
        peeks = _peek_decoder.decode(b"[" + block[:-1].replace(b"\n", b",") + b"]")
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        peeks = []
    if len(peeks) != block.count(b"\n"):
        frames = split_block(block)
        return frames, [None] * len(frames)
    return None, peeks
