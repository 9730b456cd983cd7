"""chatroom_server.starter: connection threads started off the accept loop."""

from __future__ import annotations

import queue
import threading

from chatroom_server.starter import ThreadStarter


class _Unstartable(threading.Thread):
    def start(self) -> None:
        raise RuntimeError("can't start new thread")


def test_submitted_threads_run_and_a_failure_is_reported() -> None:
    ran: queue.SimpleQueue[int] = queue.SimpleQueue()
    failures: queue.SimpleQueue[str] = queue.SimpleQueue()
    starter = ThreadStarter(workers=2)
    try:
        threads = [threading.Thread(target=ran.put, args=(i,)) for i in range(20)]
        for t in threads[:10]:
            starter.submit(t, lambda exc: failures.put(str(exc)))
        starter.submit(_Unstartable(), lambda exc: failures.put(str(exc)))
        for t in threads[10:]:
            starter.submit(t, lambda exc: failures.put(str(exc)))
        assert sorted(ran.get(timeout=5) for _ in threads) == list(range(20))
        assert failures.get(timeout=5) == "can't start new thread"
    finally:
        starter.close()
    assert failures.empty()


def test_a_failing_callback_does_not_end_the_starter() -> None:
    ran = threading.Event()

    def boom(exc: RuntimeError) -> None:
        raise ValueError("cleanup failed")

    starter = ThreadStarter(workers=1)
    try:
        starter.submit(_Unstartable(), boom)
        starter.submit(threading.Thread(target=ran.set), boom)
        assert ran.wait(5)
    finally:
        starter.close()


def test_close_starts_what_was_submitted_then_ends_its_threads() -> None:
    gate = threading.Event()
    ran: queue.SimpleQueue[int] = queue.SimpleQueue()
    starter = ThreadStarter(workers=1, name="test-close")
    blocker = threading.Thread(target=gate.wait, args=(5,))
    starter.submit(blocker, lambda exc: None)
    late = [threading.Thread(target=ran.put, args=(i,)) for i in range(3)]
    for t in late:
        starter.submit(t, lambda exc: None)
    gate.set()
    starter.close(timeout=5)
    assert sorted(ran.get(timeout=5) for _ in late) == [0, 1, 2]
    assert not any(t.name.startswith("test-close") for t in threading.enumerate())
    blocker.join(5)
