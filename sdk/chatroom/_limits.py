"""The limits a server announces in ``login_ok`` (docs/PROTOCOL.md §Limits), kept on the
client's side: a ``pm``/``dm`` over them is refused before it is sent, and a frame the
server refused as ``too_large`` is named so that it is never sent again."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from chatroom._sessionevents import Refused
from chatroom.errors import MessageTooLong
from chatroom.protocol import DmCommand, ErrorCode, PmCommand, ServerLimits

__all__ = ["check_limits", "too_large"]

log = logging.getLogger("chatroom.session")  # the session's records, as before the split


def check_limits(limits: ServerLimits | None, cmd: PmCommand | DmCommand, data: bytes) -> None:
    """Refuse what the server would refuse, before it is sent: a message over
    ``max_message`` characters would be answered with ``bad_request``; a frame (``data``)
    over ``max_frame`` bytes with ``too_large`` and the end of the connection, and resent
    after every reconnect. ``limits`` None: a server older than the field, which says so
    itself (:func:`too_large`)."""
    if limits is None:
        return
    n = len(cmd.message)
    if n > limits.max_message:
        raise MessageTooLong(
            ErrorCode.BAD_REQUEST,
            f"message is {n:,} characters; the limit is {limits.max_message:,}",
            length=n,
            limit=limits.max_message,
        )
    size = len(data) - 1  # the limit counts the frame without its newline (§Framing)
    if size > limits.max_frame:
        raise MessageTooLong(
            ErrorCode.TOO_LARGE,
            f"message is {size:,} bytes as a frame; the limit is {limits.max_frame:,}",
            length=size,
            limit=limits.max_frame,
        )


def too_large(
    limits: ServerLimits | None, unacked: Mapping[int, tuple[str, bytes]], message: str
) -> Refused | None:
    """The server refused a frame of ours as ``too_large`` (``message``: its words) and is
    closing the connection (docs/PROTOCOL.md §Framing). The frame cannot be named (the
    server never read its id), but it is one of the ``unacked`` ``pm``/``dm`` (request id
    -> (cid, frame)) over the limit, or, from a server that announced none, the largest:
    its refusal, or None if there is no such request."""
    limit = limits.max_frame if limits is not None else None
    over = [
        (len(data) - 1, rid)
        for rid, (_, data) in unacked.items()
        if limit is None or len(data) - 1 > limit
    ]
    if not over:
        return None
    size, rid = max(over)
    log.warning("the server refused a %d-byte frame: %s", size, message)
    return Refused(
        rid,
        MessageTooLong(
            ErrorCode.TOO_LARGE,
            f"message is {size:,} bytes as a frame; the server refused it ({message})",
            rid,
            length=size,
        ),
    )
