"""Schedules in both bots: every, at, later; errors, overlap, reconnects, stopping; all on
the harness's fake clock."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from chatroom import Reconnected
from chatroom_bots import AsyncBot, Bot, FakeClock
from chatroom_bots.core import BotBase
from chatroom_bots.testing import BotTester

Tester = Callable[..., BotTester]
T = 10.0


def announcer(kind: str) -> BotBase:
    """Says "tick N" every 5 minutes, "good morning" at 09:00 Paris time, and raises on
    every second tick of a third schedule."""
    if kind == "threaded":
        bot: BotBase = Bot("clock")
    else:
        bot = AsyncBot("clock")
    ticks = [0]
    flaky = [0]

    if isinstance(bot, Bot):
        threaded = bot

        @threaded.every(minutes=5)
        def tick() -> None:
            ticks[0] += 1
            threaded.say(f"tick {ticks[0]}")

        @threaded.at("09:00", tz="Europe/Paris")
        def morning(b: Bot) -> None:
            b.say("good morning")

        @threaded.every(hours=1, name="flaky")
        def fails_every_other_time() -> None:
            flaky[0] += 1
            if flaky[0] % 2:
                raise RuntimeError(f"flaky run {flaky[0]}")
            threaded.say(f"flaky ok {flaky[0]}")

    else:
        assert isinstance(bot, AsyncBot)
        aio = bot

        @aio.every(minutes=5, name="tick")
        async def tick_async() -> None:
            ticks[0] += 1
            await aio.say(f"tick {ticks[0]}")

        @aio.at("09:00", tz="Europe/Paris", name="morning")
        async def morning_async(b: AsyncBot) -> None:
            await b.say("good morning")

        @aio.every(hours=1, name="flaky")
        def fails_every_other_time_async() -> Any:
            flaky[0] += 1
            if flaky[0] % 2:
                raise RuntimeError(f"flaky run {flaky[0]}")
            return aio.say(f"flaky ok {flaky[0]}")  # a coroutine: awaited

    return bot


@pytest.fixture(params=["threaded", "asyncio"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def start_at_0858_paris(bot: BotBase, bot_tester: Tester) -> BotTester:
    # 07:58 UTC is 08:58 in Paris in winter.
    return bot_tester(bot, clock=FakeClock(datetime(2030, 1, 7, 7, 58, tzinfo=UTC)))


def test_every_and_at(kind: str, bot_tester: Tester) -> None:
    t = start_at_0858_paris(announcer(kind), bot_tester)
    t.advance(minutes=1)
    t.expect_no_reply()
    t.advance(minutes=1)  # 09:00
    assert t.expect_reply().text == "good morning"
    t.advance(minutes=3)  # five minutes since the start
    assert t.expect_reply().text == "tick 1"
    t.advance(minutes=4, seconds=59)
    t.expect_no_reply()
    t.advance(seconds=1)
    assert t.expect_reply().text == "tick 2"
    t.advance(days=1)  # a day later: one good morning and one tick, not 288 ticks
    texts = sorted(r.text for r in t.replies())
    assert texts == ["good morning", "tick 3"]  # (and flaky's first run, which raised)


def test_a_schedule_that_raises_is_logged_and_runs_again(
    kind: str, bot_tester: Tester, caplog: pytest.LogCaptureFixture
) -> None:
    t = start_at_0858_paris(announcer(kind), bot_tester)
    with caplog.at_level(logging.ERROR):
        t.advance(hours=1)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "schedule flaky raised (run 1); it runs again at its next time" in errors[0].message
    assert errors[0].exc_info is not None
    assert {r.text for r in t.replies()} >= {"good morning", "tick 1"}
    t.advance(hours=1)
    assert "flaky ok 2" in {r.text for r in t.replies()}
    flaky = next(j for j in t.bot.jobs() if j.name == "flaky")
    assert (flaky.runs, flaky.failures, flaky.last_error) == (2, 1, "RuntimeError: flaky run 1")


def test_later_and_cancel(kind: str, bot_tester: Tester) -> None:
    bot: BotBase = Bot("later") if kind == "threaded" else AsyncBot("later")
    said: list[str] = []
    t = bot_tester(bot)
    bot.later(90, lambda: said.append("ninety"))
    never = bot.later(60, lambda: said.append("sixty"))
    never.cancel()
    t.advance(89)
    assert said == []
    t.advance(1)
    assert said == ["ninety"]
    t.advance(3600)
    assert said == ["ninety"]
    assert bot.jobs() == []


def test_a_schedule_never_overlaps_itself(bot_tester: Tester) -> None:
    bot = Bot("slow")
    started = threading.Event()
    release = threading.Event()
    runs: list[float] = []

    @bot.every(seconds=10)
    def slow() -> None:
        runs.append(bot.clock.monotonic())
        started.set()
        assert release.wait(T)

    t = bot_tester(bot)
    assert t.clock is not None
    t.clock.advance(10)
    assert started.wait(T)
    t.clock.advance(35)  # three more ticks come due while it runs
    release.set()
    t.settle()
    job = bot.jobs()[0]
    assert (len(runs), job.runs, job.skipped) == (1, 1, 3)
    started.clear()
    t.advance(5)  # the next tick is on the original grid: 50 s after the start
    assert len(runs) == 2 and started.is_set()


def test_schedules_survive_reconnects_and_wait_for_the_connection(
    kind: str, bot_tester: Tester
) -> None:
    t = start_at_0858_paris(announcer(kind), bot_tester)
    assert t.clock is not None
    client: Any = t.bot.client  # type: ignore[attr-defined]
    back = threading.Event()
    client.on_reconnect(lambda e: back.set() if isinstance(e, Reconnected) else None)
    t.server.stop()
    t.clock.advance(minutes=5)  # tick 1 (and good morning) come due while offline
    t.server.start()
    assert back.wait(T)
    t.settle()
    assert sorted(r.text for r in t.replies()) == ["good morning", "tick 1"]
    t.restart_server()
    t.advance(minutes=5)
    assert t.expect_reply().text == "tick 2"


def test_schedules_stop_with_the_bot(kind: str, bot_tester: Tester) -> None:
    t = start_at_0858_paris(announcer(kind), bot_tester)
    assert len(t.bot.jobs()) == 3
    t.close()
    assert t.bot.jobs() == []
    assert not [th for th in threading.enumerate() if th.name.startswith("bot-clock")]
