"""Every example bot in bots/examples/, tested with the harness as a bot author would."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

from chatroom_bots import Bot, FakeClock
from chatroom_bots.testing import BotTester

Tester = Callable[..., BotTester]
EXAMPLES = Path(__file__).resolve().parents[2] / "bots" / "examples"


def example(name: str) -> ModuleType:
    """A fresh copy of the example module (its plugin and state are its own)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_has_a_main() -> None:
    for path in sorted(EXAMPLES.glob("*.py")):
        if path.name == "locustfile.py":
            continue  # Locust's, not a bot
        assert "def main() -> None:" in path.read_text(), path.name


def test_poll(bot_tester: Tester, tmp_path: Path) -> None:
    store = tmp_path / "poll.store"
    bot = Bot("poll", store=store)
    bot.load_plugin(str(EXAMPLES / "poll_bot.py"))
    t = bot_tester(bot)
    t.say("alice", '!poll create "Lunch where?" pizza sushi')
    assert t.expect_reply().text == (
        "alice asks: Lunch where? [1] pizza [2] sushi (vote: !poll vote N)"
    )
    t.say("bob", "!poll vote 2")
    assert t.expect_reply().text == "bob votes sushi"
    t.say("carol", "!poll vote 3")
    assert t.expect_reply().text == "carol: vote 1 to 2"
    t.say("carol", "!poll vote 1")
    t.say("bob", "!poll vote 1")  # changes bob's vote
    assert [t.expect_reply().text for _ in range(2)] == ["carol votes pizza", "bob votes pizza"]
    t.say("bob", "!poll close")
    assert t.expect_reply().text == "bob: only alice can close this poll"
    t.dm("dave", "!poll show")  # a DM is another place
    assert t.expect_reply().text.startswith("dave: no poll here")
    t.close()
    # The poll survives a restart of the bot (a new process would read the same file).
    again = Bot("poll", store=store)
    again.load_plugin(str(EXAMPLES / "poll_bot.py"))
    t = bot_tester(again)
    t.say("alice", "!poll show")
    assert t.expect_reply().text == "Lunch where? pizza: 2, sushi: 0"
    t.say("alice", "!poll close")
    assert t.expect_reply().text == "closed: Lunch where? pizza: 2, sushi: 0"
    t.say("alice", "!poll create one-option only")
    assert t.expect_reply().text == "alice: give 2 to 10 options"


def test_remind_survives_a_restart(bot_tester: Tester, tmp_path: Path) -> None:
    store = tmp_path / "remind.store"
    start = datetime(2030, 1, 7, 12, 0, tzinfo=UTC)
    bot = Bot("remind", store=store, clock=FakeClock(start))
    bot.load_plugin(str(EXAMPLES / "remind_bot.py"))
    t = bot_tester(bot)
    t.dm("alice", "!remind 10m stretch your legs")
    assert t.expect_reply().text == "alice: I'll remind you in 0:10:00"
    t.dm("alice", "!remind 2h drink water")
    t.expect_reply()
    t.dm("alice", "!remind soon x")
    assert "is not a duration" in t.expect_reply().text
    t.advance(minutes=10)
    r = t.expect_reply()
    assert (r.text, r.private, r.to) == ("reminder: stretch your legs", True, "alice")
    t.dm("alice", "!reminders")
    assert t.expect_reply().text == "in 1:50:00: drink water"
    t.close()
    # A new process at 13:10: the reminder due at 14:00 is scheduled again on load.
    clock = FakeClock(start.replace(hour=13, minute=10))
    again = Bot("remind", store=store, clock=clock)
    again.load_plugin(str(EXAMPLES / "remind_bot.py"))
    t = bot_tester(again)
    t.login("alice")
    t.advance(minutes=49)
    t.expect_no_reply()
    t.advance(minutes=1)
    assert t.expect_reply().text == "reminder: drink water"
    t.dm("alice", "!reminders")
    assert t.expect_reply().text == "alice: nothing pending"


def test_quiz_is_a_conversation(bot_tester: Tester) -> None:
    bot = Bot("quiz")
    bot.load_plugin(str(EXAMPLES / "quiz_bot.py"))
    t = bot_tester(bot)
    t.dm("alice", "!quiz")
    assert t.expect_reply(to="alice").text == "What is 6 x 7?"
    t.dm("bob", "!quiz")  # bob plays at the same time
    assert t.expect_reply(to="bob").text == "What is 6 x 7?"
    for answer in ("42", "Jupiter", "6"):
        t.dm("alice", answer)
        if answer != "6":
            t.expect_reply(to="alice")
    assert t.expect_reply(to="alice").text == "alice: 3/3 (your best: 3)"
    t.dm("bob", "41")
    assert t.expect_reply(to="bob").text == "Which planet is the largest?"
    t.advance(60)
    assert t.expect_reply(to="bob").text == "bob: time's up! 0/3"
    assert t.store.namespace("quiz")["best/alice"] == 3


def test_standup(bot_tester: Tester, tmp_path: Path) -> None:
    # Monday 2030-01-07, 09:29 in Paris (08:29 UTC).
    monday = FakeClock(datetime(2030, 1, 7, 8, 29, tzinfo=UTC))
    bot = Bot("standup", clock=monday, store=tmp_path / "standup.store")
    bot.load_plugin(str(EXAMPLES / "standup_bot.py"))
    bot.allow_list("admins").add("boss")
    t = bot_tester(bot)
    t.dm("alice", "!did coding")
    assert t.expect_reply().text == "alice: !did is for team only"
    t.dm("alice", "!team add alice")
    assert t.expect_reply().text == "alice: !team add is for admins only"
    t.dm("boss", "!team add alice")
    assert t.expect_reply().text == "alice is in the team"
    t.advance(minutes=1)
    assert t.expect_reply().text.startswith("stand-up! tell me by DM")
    t.say("alice", "!did in public")
    assert t.expect_reply().text == "alice: !did works by DM only"
    t.dm("alice", "!did reviews, then the release")
    assert t.expect_reply().text == "noted"
    t.advance(minutes=30)
    assert t.expect_reply().text == "stand-up notes: alice: reviews, then the release"
    calls = []
    for _ in range(5):  # Tuesday to Friday, then Saturday: four calls, no notes to post
        t.advance(days=1)
        calls += [r.text for r in t.replies()]
    assert len(calls) == 4 and all(c.startswith("stand-up!") for c in calls)


def test_moderated(bot_tester: Tester, tmp_path: Path) -> None:
    bot = Bot("moderated", store=tmp_path / "moderated.store")
    bot.load_plugin(str(EXAMPLES / "moderated_bot.py"))
    bot.allow_list("admins").add("boss")
    t = bot_tester(bot)
    t.dm("alice", "!echo hello")
    assert t.expect_reply().text == "hello"
    t.dm("alice", "!echo see https://example.com")
    assert t.expect_reply().text == "alice: no links, please"
    t.dm("boss", "!deny mallory")
    assert t.expect_reply().text == "mallory is denied"
    t.dm("mallory", "!echo hi")
    assert t.expect_reply().text == "you may not use this bot"
    t.dm("alice", "!stats")
    assert t.expect_reply().text == "alice: !stats is for admins only"
    t.dm("boss", "!stats")
    stats = t.expect_reply().text
    # Metrics runs before no_links (the order added): the refused echo counts; so does
    # alice's refused !stats, as an error (the check raised).
    assert "echo: 2 calls, 0 errors" in stats and "deny: 1 calls, 0 errors" in stats
    assert "stats: 1 calls, 1 errors" in stats


def test_async_dice(bot_tester: Tester) -> None:
    module = example("async_dice_bot")
    t = bot_tester(module.bot)
    t.say("alice", "!roll 3 1000")
    text = t.expect_reply().text
    assert text.startswith("alice rolled ") and text.count("+") == 2
    t.dm("alice", "!r 0")
    assert "is not between 1 and 100" in t.expect_reply().text
    t.dm("bob", "!bet 2")
    assert t.expect_reply().text == "bob: your guess, 1 to 2?"
    t.dm("bob", "1")
    assert t.expect_reply().text.startswith("bob: rolled ")
    t.dm("bob", "!bet")
    t.expect_reply()
    t.advance(30)
    assert t.expect_reply().text == "bob: no bet, no roll"
