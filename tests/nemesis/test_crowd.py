"""The crowd (tests/nemesis/crowd.py) against a real server: its members log in, join,
resume after their connections are cut, and the checker holds every one of them to the
rules (nothing lost, nothing twice), finding a receipt taken out of a member's history."""

from __future__ import annotations

from collections.abc import Iterator

import msgspec
import pytest

from chatroom.testing import TestServer
from tests.cluster.test_rooms_cluster import v2
from tests.helpers import CutProxy
from tests.nemesis.checker import check
from tests.nemesis.crowd import HALL, Crowd, crowd_names
from tests.nemesis.history import Event, FrameIn, FrameOut, History, Meta, Op

T = 20.0


@pytest.fixture
def proxy(server: TestServer) -> Iterator[CutProxy]:
    p = CutProxy(server.address)
    try:
        yield p
    finally:
        p.close()


def test_the_crowd_resumes_after_a_cut_and_is_checked(server: TestServer, proxy: CutProxy) -> None:
    names = crowd_names(3)
    history = History()
    history.add(Meta(seed=1, target="single", duration=0, users=[], options={"crowd": names}))
    writer, _ = v2(server.address, "writer")
    writer.send(command="join", room=HALL, id="j")
    writer.until("room_info", id="j")
    writer.send(command="join", room="tea", id="t")
    writer.until("room_info", id="t")
    crowd = Crowd(names, [proxy.address], history, seed=1, small_rooms=["tea"])
    crowd.start()
    seqs: list[int] = []
    try:
        assert crowd.wait_ready(T), "the crowd did not log in and join"
        conn = history.new_conn()

        def send(message: str, rid: object, room: str | None = None) -> int:
            """A pm of the writer, its frame and ack in the history (what it sent)."""
            frame = {"command": "pm", "message": message, "id": rid}
            if room is not None:
                frame["room"] = room
            history.frame_out("writer", 0, conn, frame)
            writer.send(**frame)
            ack = writer.until("ack", id=rid)
            history.frame_in("writer", 0, conn, ack)
            return int(ack["seq"])

        for k in range(12):
            if k == 6:
                proxy.cut()  # every member's connection, at once
            seqs.append(send(f"m{k}", k, (None, HALL, "tea")[k % 3]))
        marker = send("the end", "end")  # lobby: everyone's
        assert history.wait_until(
            lambda: all(history.tops().get(n, 0) >= marker for n in names), T
        ), "not every member got the last message"
    finally:
        crowd.stop.set()
        crowd.thread.join(T)
    assert crowd.errors == []
    h = history
    h.add(Op(t=h.now(), user="writer", client=0, op=1, phase="ok", kind="marker", seq=marker))
    events = history.snapshot()
    resumes = {
        e.user
        for e in events
        if isinstance(e, FrameOut) and e.f.get("command") == "login" and "since" in e.f
    }
    assert resumes == set(names)  # each came back after the cut, resuming
    result = check(events)
    assert [a.describe() for a in result.anomalies] == []
    assert result.stats["required receipts"] > 0

    # A live receipt taken out of one member's history: the checker finds it lost.
    gone = seqs[0]
    cut = [
        e
        for e in events
        if not (isinstance(e, FrameIn) and e.user == names[0] and e.f.get("seq") == gone)
    ]
    assert len(cut) == len(events) - 1
    kinds = {a.kind for a in check(cut).anomalies}
    assert "lost" in kinds

    # And one given twice on its connection: a duplicate.
    twice: list[Event] = []
    for e in events:
        twice.append(e)
        if isinstance(e, FrameIn) and e.user == names[1] and e.f.get("seq") == gone:
            twice.append(msgspec.structs.replace(e, t=e.t + 0.001))
    assert "duplicate" in {a.kind for a in check(twice).anomalies}
