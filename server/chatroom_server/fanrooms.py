"""Public messages to rooms in the fan-out's pass (chatroom_server.fanout, "Rooms";
docs/PROTOCOL.md §Rooms): before the pass stores its messages, who may say each room
message of a batch and who hears it (:func:`check_rooms`); once stored, the batch's
messages as runs per room with their seqs and events, and its acks
(:func:`stored_rooms`). And the answer to a reused cid (:func:`conflict`), which lobby
messages and DMs get too.

Threads: called by the fan-out lock's holder only, on items only it touches once
queued (chatroom_server.fanitems).
"""

from __future__ import annotations

import msgspec

from chatroom.errors import ProtocolError
from chatroom.protocol import Ack, Broadcast, ErrorCode, ErrorEvent, RequestId, decode_event, encode
from chatroom_server.fanitems import Batch, RoomCheck, with_seq
from chatroom_server.frames import Frames, Stamped, encoded, framed
from chatroom_server.livecids import LiveCids
from chatroom_server.livecids import conflict as live_conflict
from chatroom_server.messagelog import Conflict, Duplicate, Outcome


def conflict(got: Conflict, rid: RequestId) -> ErrorEvent:
    """The answer to a message whose cid its sender already used for another one
    (docs/PROTOCOL.md §Idempotent sends)."""
    return ErrorEvent(
        code=ErrorCode.CID_CONFLICT,
        message=f"this cid was used for another message (seq {got.seq}); "
        "this one was not stored or delivered",
        id=rid,
    )


def check_rooms(item: Batch, check: RoomCheck | None, live_cids: LiveCids) -> None:
    """Under ``FanOut._lock``, before storing: may the sender say each room message of
    ``item`` (``check``: FanOut.serve_rooms's; None, no rooms served), and to whom. A
    refused one is neither stored nor sent; its sender gets the error in its ack's
    place, in order. One to a guest room is sent, in order, but not stored: no seq in
    its frame or ack (docs/PROTOCOL.md §Guest rooms). The room's canonical spelling goes
    into the frames and the log."""
    assert item.msgs is not None and item.rids is not None
    members: list[tuple[str, frozenset[str]] | None] = []
    item.members, item.refused, item.live = members, {}, set()
    for k, m in enumerate(item.msgs):
        if m.room is None:
            members.append(None)  # a lobby message of the same read
            continue
        rid = item.rids[k]
        try:
            if check is None:
                raise ProtocolError(ErrorCode.NO_SUCH_ROOM, f"no room {m.room!r}", rid)
            room, keys, stored = check(m.sender, m.room, rid, m.ts)
        except ProtocolError as exc:
            frame = encoded(ErrorEvent(code=exc.code, message=exc.message, id=exc.request_id))
            item.refused[k] = frame
            members.append(None)
            continue
        if room != m.room:  # another spelling: the frames carry the canonical one
            m.room = room
            if item.events is not None:
                event = msgspec.structs.replace(item.events[k][0], room=room)
            else:  # frames alone (a test's): what the log keeps no mark of (§pm)
                event = Broadcast(
                    sender=m.sender,
                    message=m.body,
                    ts=m.ts,
                    room=room,
                    notice=getattr(decode_event(item.frames[k]), "notice", False),
                )
            ack = Ack(command="pm", room=room, id=rid)
            item.frames[k] = encode(event)
            item.acks[k] = encode(ack)
            if item.events is not None:
                item.events[k] = (event, ack)
        if not stored:
            again = None if m.cid is None else live_cids.check(m.sender, m.cid, room, m.body)
            if again is not None:  # a resend: acked again, sent no more (livecids.py)
                item.refused[k] = item.acks[k] if again else live_conflict(rid)
                members.append(None)
                continue
            item.live.add(k)
        members.append((room, keys))


def stored_rooms(item: Batch, seqs: list[Outcome], k: int) -> int:
    """Under ``FanOut._lock``, once stored: ``item.parts`` and ``item.ack`` from the seqs (from
    ``seqs[k]`` on); the index after its own."""
    assert item.rids is not None
    # Each part: its members, its frames and what they encode (chatroom_server.frames).
    parts: list[tuple[tuple[str, frozenset[str]] | None, list[bytes], list[Stamped]]] = []
    acks: list[bytes] = []
    events = item.events
    # What the acks encode (None: not known, the acks go as bytes alone).
    answers: list[Stamped] | None = None if events is None else []
    refused, live = item.refused, item.live
    last: str | None = None  # the room of the last part (None: lobby)
    for i, (frame, ack) in enumerate(zip(item.frames, item.acks, strict=True)):
        if i in refused:
            answer = refused[i]
            acks.append(answer)
            if answers is not None and isinstance(answer, Frames):
                answers += answer.events
            else:  # a resend's answer (livecids.py): the acks go as bytes alone
                answers = None
            continue
        seq: int | None = None  # a guest room's: sent as it is, no seq (§Guest rooms)
        if i not in live:
            got = seqs[k]
            k += 1
            if type(got) is Duplicate:
                acks.append(with_seq(ack, got.seq))  # a resend: stored once, sent once
                if events is not None and answers is not None:
                    answers.append((events[i][1], got.seq))
                continue
            if type(got) is not int:
                error = conflict(got, item.rids[i])  # type: ignore[arg-type]
                acks.append(encode(error))
                if answers is not None:
                    answers.append((error, None))
                continue
            seq = got
            frame, ack = with_seq(frame, seq), with_seq(ack, seq)
        to = item.members[i]
        room = None if to is None else to[0]  # consecutive ones of a room: one part
        if not parts or room != last:
            parts.append((to, [], []))
            last = room
        parts[-1][1].append(frame)
        acks.append(ack)
        if events is not None:
            parts[-1][2].append((events[i][0], seq))
            if answers is not None:
                answers.append((events[i][1], seq))
    if events is None:
        item.parts = [(to, b"".join(frames), len(frames)) for to, frames, _ in parts]
    else:
        item.parts = [
            (to, framed(b"".join(frames), stamps), len(frames)) for to, frames, stamps in parts
        ]
    item.ack = b"".join(acks) if answers is None else framed(b"".join(acks), answers)
    return k
