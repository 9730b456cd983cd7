"""The threaded bot's machinery on its own: the turn runner, the schedules' plan and
driver on a fake clock, and the store. Real threads and files, no server."""

from __future__ import annotations

import functools
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chatroom_bots import FakeClock, Store, StoreError
from chatroom_bots.conversations import Conversations, ThreadQuestion
from chatroom_bots.schedules import Job, JobSpec, JobTable, ThreadScheduler, as_tz, parse_at
from chatroom_bots.storage import MAX_VALUE
from chatroom_bots.turns import Stopping, TooBusy, TurnRunner

T = 10.0


# ---------------------------------------------------------------------- turns


def test_jobs_run_one_at_a_time_in_arrival_order() -> None:
    runner = TurnRunner("t")
    done: queue.Queue[int] = queue.Queue()
    inside = 0
    overlaps = 0
    lock = threading.Lock()

    def job(i: int) -> None:
        nonlocal inside, overlaps
        with lock:
            inside += 1
            overlaps += inside > 1
        try:
            done.put(i)
        finally:
            with lock:
                inside -= 1

    for i in range(200):
        assert runner.submit(functools.partial(job, i))
    assert [done.get(timeout=T) for _ in range(200)] == list(range(200))
    assert runner.wait_idle(T)
    assert overlaps == 0
    runner.stop()
    assert not runner.submit(lambda: None)


def test_a_suspended_job_lets_the_next_run_and_resumes_in_turn() -> None:
    runner = TurnRunner("t")
    log: queue.Queue[str] = queue.Queue()
    asked = threading.Event()
    answer = threading.Event()

    def asker() -> None:
        log.put("ask")
        s = runner.suspend()
        asked.set()
        assert answer.wait(T)
        runner.wait_turn(s)
        assert runner.holds_turn()
        log.put("resumed")

    runner.submit(asker)
    assert asked.wait(T)
    runner.submit(lambda: log.put("other"))  # runs while asker waits
    assert [log.get(timeout=T) for _ in range(2)] == ["ask", "other"]
    answer.set()
    assert log.get(timeout=T) == "resumed"
    assert runner.wait_idle(T)
    runner.stop()


def test_too_many_suspended_jobs_and_stopping() -> None:
    runner = TurnRunner("t", max_waiting=2)
    results: queue.Queue[str] = queue.Queue()
    release = threading.Event()

    def waiter() -> None:
        try:
            s = runner.suspend()
        except TooBusy:
            results.put("busy")
            return
        results.put("waiting")
        release.wait(T)
        try:
            runner.wait_turn(s)
        except Stopping:
            results.put("stopped")
            raise
        results.put("resumed")

    for _ in range(3):
        runner.submit(waiter)
    got = sorted(results.get(timeout=T) for _ in range(3))
    assert got == ["busy", "waiting", "waiting"]
    assert runner.wait_idle(T)  # waiting handlers hold no turn
    runner.stop()  # nothing new runs; the handlers under way still finish, in turn
    release.set()
    assert [results.get(timeout=T) for _ in range(2)] == ["resumed", "resumed"]
    assert not runner.submit(lambda: None)


def test_a_question_times_out_on_the_fake_clock() -> None:
    clock = FakeClock()
    runner = TurnRunner("t")
    convs = Conversations(limit=4)
    out: queue.Queue[str | None] = queue.Queue()
    started = threading.Event()

    def ask() -> None:
        q = ThreadQuestion(runner, clock, 60)
        assert convs.open(("k",), q)
        started.set()
        out.put(q.wait())
        convs.close(("k",), q)

    runner.submit(ask)
    assert started.wait(T)
    clock.advance(59)
    runner.submit(lambda: out.put("other"))
    assert out.get(timeout=T) == "other"
    clock.advance(2)
    assert out.get(timeout=T) is None
    # And an answered one:
    runner.submit(ask)
    started.clear()
    assert started.wait(T)
    assert convs.offer(("k",), "yes")
    assert out.get(timeout=T) == "yes"
    assert not convs.offer(("k",), "nobody asks")
    runner.stop()


# ---------------------------------------------------------------------- schedules


def test_every_skips_what_it_was_too_late_for() -> None:
    clock = FakeClock()
    table = JobTable(clock)
    job = Job(JobSpec("tick", lambda: None, "every", interval=60))
    table.add(job)
    assert table.take_due() == []
    assert table.next_wait() == 60
    clock.advance(60)
    assert table.take_due() == [job]
    assert table.take_due() == []  # running: never twice at once
    clock.advance(200)  # the run took long
    table.finished(job)
    assert job.skipped == 3 and table.next_wait() == pytest.approx(40)
    assert table.quiet()


def test_at_follows_the_wall_clock_in_its_timezone_across_dst() -> None:
    paris = as_tz("Europe/Paris")
    # The day before the spring change (2030-03-31 in Europe): 09:00 is 08:00 UTC then
    # 07:00 UTC the day after.
    clock = FakeClock(datetime(2030, 3, 30, 7, 0, tzinfo=UTC))
    table = JobTable(clock)
    job = Job(JobSpec("standup", lambda: None, "at", at=parse_at("09:00"), tz=paris))
    table.add(job)
    assert datetime.fromtimestamp(job.due, UTC) == datetime(2030, 3, 30, 8, 0, tzinfo=UTC)
    clock.set(datetime(2030, 3, 30, 8, 0, tzinfo=UTC))
    assert table.take_due() == [job]
    table.finished(job)
    assert datetime.fromtimestamp(job.due, UTC) == datetime(2030, 3, 31, 7, 0, tzinfo=UTC)
    with pytest.raises(ValueError):
        parse_at("25:00")
    with pytest.raises(ValueError):
        parse_at("nine")


def test_the_thread_scheduler_runs_what_comes_due_when_the_clock_moves() -> None:
    clock = FakeClock()
    ran: queue.Queue[str] = queue.Queue()
    sched: ThreadScheduler

    def submit(job: Job) -> None:
        ran.put(job.name)
        sched.done(job)

    sched = ThreadScheduler(clock, submit, "t")
    sched.add_job(Job(JobSpec("five", lambda: None, "every", interval=300)))
    later = Job(JobSpec("once", lambda: None, "later", interval=10))
    sched.add_job(later)
    cancelled = Job(JobSpec("never", lambda: None, "later", interval=10))
    sched.add_job(cancelled)
    cancelled.cancel()
    sched.start()
    try:
        clock.advance(10)
        assert ran.get(timeout=T) == "once"
        assert sched.settle(T)
        clock.advance(290)
        assert ran.get(timeout=T) == "five"
        assert sched.settle(T)
        clock.advance(300)
        assert ran.get(timeout=T) == "five"
        assert sched.settle(T)
        assert ran.empty()
        assert [j.name for j in sched.jobs()] == ["five"]
    finally:
        sched.stop()


# ---------------------------------------------------------------------- store


def test_store_survives_a_restart_and_keeps_namespaces_apart(tmp_path: Path) -> None:
    path = tmp_path / "bot.store"
    store = Store(path)
    store["n"] = 1
    store["votes"] = {"pizza": ["alice"], "sushi": []}
    store.namespace("poll")["n"] = "other"
    del store["n"]
    with pytest.raises(KeyError):
        del store["n"]
    store.close()
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    again = Store(path)
    assert dict(again) == {"votes": {"pizza": ["alice"], "sushi": []}}
    assert again.namespace("poll")["n"] == "other"
    assert "n" not in again and len(again) == 1
    again.close()


def test_store_change_is_atomic_across_threads(tmp_path: Path) -> None:
    store = Store(tmp_path / "count.store")
    barrier = threading.Barrier(8)

    def count() -> None:
        barrier.wait(T)
        for _ in range(50):
            store.change("n", lambda n: (n or 0) + 1)

    threads = [threading.Thread(target=count) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(T)
    assert store["n"] == 400
    store.close()


def test_store_refuses_bad_values_and_bad_files(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.store")
    with pytest.raises(StoreError, match="cannot store 'x'"):
        store["x"] = object()
    with pytest.raises(StoreError, match="the limit is"):
        store["big"] = "x" * (MAX_VALUE + 1)
    with pytest.raises(TypeError):
        store[3] = 1  # type: ignore[index]
    assert "x" not in store and "big" not in store
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store["y"] = 1
    garbage = tmp_path / "garbage.store"
    garbage.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(StoreError, match=r"cannot use .*garbage.store as a bot store"):
        Store(garbage)["k"] = 1


def test_a_store_shared_by_two_processes_waits_for_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "shared.store"
    one, two = Store(path), Store(path)
    one["a"] = 1
    # Another connection holds a write transaction: the store waits, then writes.
    other = sqlite3.connect(path, timeout=T)
    other.execute("BEGIN IMMEDIATE")
    done = threading.Event()

    def write() -> None:
        two["b"] = 2
        done.set()

    t = threading.Thread(target=write)
    t.start()
    assert not done.wait(0.2)  # blocked on the lock, as it should be
    other.rollback()
    other.close()
    t.join(T)
    assert done.is_set() and one["b"] == 2
    one.close()
    two.close()


def test_a_store_killed_mid_write_loses_nothing_it_acknowledged(tmp_path: Path) -> None:
    """kill -9 while a bot counts in its store: every count the store returned is on disk,
    and the file is sound."""
    path = tmp_path / "count.store"
    code = (
        "import sys\n"
        "from chatroom_bots.storage import Store\n"
        f"s = Store({str(path)!r})\n"
        "while True:\n"
        "    print(s.change('n', lambda n: (n or 0) + 1), flush=True)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    last = 0
    try:
        for line in proc.stdout:
            last = int(line)
            if last >= 200:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(T)
        proc.stdout.close()
    assert last >= 200
    store = Store(path)
    assert store["n"] >= last
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()
