"""chatroom_server.readers: connection threads started with ``_thread``, and the
server when one cannot start."""

from __future__ import annotations

import sys
import threading
from types import FrameType
from typing import Any

import pytest

from chatroom_server.readers import ReaderThread
from tests.helpers import RawClient, connect, quiet_server


def test_a_reader_runs_its_target_and_can_be_joined() -> None:
    go, got = threading.Event(), []

    def target(arg: str) -> None:
        go.wait(10)
        got.append(arg)

    t = ReaderThread()
    assert t.is_alive()  # before start: a stop must wait for it
    t.start(target, "conn")
    assert not t.join(0.05)  # still running: the wait ends on the timeout
    assert t.is_alive()
    go.set()
    assert t.join(10)
    assert got == ["conn"] and not t.is_alive()
    assert t.join(0)  # ended: at once, every time


def test_a_reader_ends_even_when_its_target_raises() -> None:
    def boom(_: object) -> None:
        raise SystemExit  # _thread ends the thread quietly; anything else is reported

    t = ReaderThread()
    t.start(boom, None)
    assert t.join(10)


def test_a_reader_gets_the_profiler_threading_would_give_it() -> None:
    calls: list[str] = []

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            calls.append(frame.f_code.co_name)

    def target(_: object) -> None:
        pass

    threading.setprofile(profile)
    try:
        t = ReaderThread()
        t.start(target, None)
        assert t.join(10)
    finally:
        threading.setprofile(None)
    assert "target" in calls
    assert sys.getprofile() is None  # this thread's own was never set


def test_a_connection_whose_thread_cannot_start_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with quiet_server() as srv:
        first = connect(srv.address, "first")
        real = ReaderThread.start

        def no_thread(self: ReaderThread, target: Any, arg: Any) -> None:
            monkeypatch.setattr(ReaderThread, "start", real)  # only this once
            raise RuntimeError("can't start new thread")

        monkeypatch.setattr(ReaderThread, "start", no_thread)
        with RawClient(srv.address) as second:
            second.send(command="ping")  # its thread starts once it speaks (admission.py)
            assert second.wait_closed() == [
                {
                    "type": "error",
                    "code": "server_full",
                    "message": "the server cannot take more connections",
                }
            ]
        first.send(command="ping")
        first.expect("pong")
        assert srv.server.connection_count == 1
        connect(srv.address, "third").send(command="ping")  # the next one has a thread
    assert srv.server.reader_threads == 0
