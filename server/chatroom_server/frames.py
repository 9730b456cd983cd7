"""Frames that carry the events they encode, for the transports that do not speak JSON.

The server encodes each event once and hands the same bytes to every recipient
(chatroom_server.fanout). A JSON client gets those bytes; an IRC client gets lines
rendered from the event (chatroom_server.irc.render). Decoding the bytes again to render
them would undo the encoding for nothing, so the paths that every message takes (a
public message, its ack, a DM) and what many IRC clients get at once (a users_delta, a
room's event) hand out :class:`Frames`: the same bytes, with the events beside them
(docs/ARCHITECTURE.md, "One public message's path").

A subclass of ``bytes`` so that everything that takes frames (``Outbox.send``,
``queue``, ``offer``, a join into a larger send) takes these unchanged, and the JSON
path costs what it did: it sends the bytes and never looks at ``events``. They are made
once per message or per round of the fan-out, never per recipient.

Threads: ``events`` is set once, by the thread that makes the frames, before they are
handed out; after that it is only read.
"""

from __future__ import annotations

from collections.abc import Sequence

from chatroom.protocol import ServerEvent, encode

# An event, and the seq the message log gave it after it was encoded (None: the event's
# own ``seq`` stands). The fan-out adds the seq to the bytes (fanitems.with_seq) without
# building the event again; a renderer that needs the seq takes it from here.
Stamped = tuple[ServerEvent, int | None]


class Frames(bytes):
    """Whole JSON frames (each one object and its newline) and ``events``: what they
    encode, in order, one :data:`Stamped` per frame (module docstring)."""

    events: Sequence[Stamped]


def framed(data: bytes, events: Sequence[Stamped]) -> Frames:
    """``data`` with the events it encodes."""
    out = Frames(data)
    out.events = events
    return out


def encoded(event: ServerEvent) -> Frames:
    """One event, encoded, carrying itself."""
    return framed(encode(event), ((event, None),))


def joined(parts: Sequence[bytes]) -> bytes:
    """``parts`` as one send, carrying their events if every part has them. Made once per
    round, or for one recipient only if its outbox renders events (``Outbox.renders``):
    a JSON recipient's join costs what it did."""
    data = b"".join(parts)
    if all(type(p) is Frames for p in parts):
        return framed(data, [e for p in parts for e in p.events])  # type: ignore[attr-defined]
    return data
