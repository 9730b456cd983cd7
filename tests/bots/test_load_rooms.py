"""chat-load --rooms: bots in rooms of planned sizes, every delivery checked per room."""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatroom import ChatClient
from chatroom.testing import TestServer
from chatroom_bots.load import LoadConfig, run_load
from chatroom_bots.load.__main__ import main as chat_load
from chatroom_bots.load.recorder import Recorder
from chatroom_bots.load.report import write_html
from chatroom_bots.load.rooms import (
    Distribution,
    choose_rooms,
    plan_rooms,
    reconcile,
    room_sizes,
    size_label,
)
from chatroom_bots.load.stats import make_names, pack, unpack, unpack_room
from tests.helpers import quiet_server

PASSWORD = LoadConfig.password


@pytest.fixture
def fast_server() -> Any:
    with quiet_server() as srv:
        yield srv


def rooms_run(port: int, **kw: Any) -> LoadConfig:
    base: dict[str, Any] = dict(
        port=port,
        clients=12,
        senders=3,
        rate=90.0,
        duration=1.0,
        processes=2,
        drain=1.0,
        rooms=3,
        pm_fraction=0.8,
    )
    base.update(kw)
    return LoadConfig(**base)


def server_members(port: int, rooms: list[str]) -> dict[str, set[str]]:
    """Each room's members as the server lists them, asked by a client of its own."""
    with ChatClient("127.0.0.1", port, rooms=True, timeout=10) as c:
        c.login("room_auditor", PASSWORD)
        return {room: set(c.members(room)) for room in rooms}


def test_rooms_nothing_lost_or_duplicated_per_room(fast_server: TestServer, tmp_path: Path) -> None:
    cfg = rooms_run(fast_server.port, room_sizes="zipf")
    result = run_load(cfg)
    assert result.ok and result.logged_in == 12 and result.sent_dm > 0
    plan = plan_rooms(12, 3, "zipf", 1, cfg.seed)
    assert [r["members"] for r in result.rooms] == plan.sizes == [7, 3, 2]
    for row in result.rooms:
        # A message to a room is expected by its other members, and all of them got it.
        assert row["sent"] > 0, row  # 3 senders, one in each room
        assert row["expected"] == row["sent"] * (row["members"] - 1)
        assert (row["delivered"], row["duplicates"], row["lost"]) == (row["expected"], 0, 0)
    assert result.foreign == 0  # nobody received a room they are not in
    assert result.expected == sum(r["expected"] for r in result.rooms) + result.sent_dm
    assert result.delivered == result.expected
    assert (result.lost, result.duplicates, result.out_of_order, result.errors) == (0, 0, 0, 0)
    # Per room size class: the rooms add up, smallest first, each with its latencies.
    assert [s["size"] for s in result.room_sizes] == ["2", "3-4", "5-8"]
    assert sum(s["delivered"] for s in result.room_sizes) == sum(
        r["delivered"] for r in result.rooms
    )
    assert all(s["latency_ms"]["p50"] > 0 for s in result.room_sizes)
    # The timeline's expectations are the rooms', and its loss adds up to none.
    assert sum(r["expected"] for r in result.timeline) == result.expected
    assert result.timeline[-1]["outstanding"] == 0
    assert "size 5-8" in result.table() and "foreign deliveries 0" in result.table()
    # The server holds the plan's memberships, and nothing more.
    names = make_names(12, cfg.seed)
    wanted = {n: {names[i] for i in m} for n, m in zip(plan.names, plan.members, strict=True)}
    assert server_members(fast_server.port, list(plan.names)) == wanted
    report = tmp_path / "report.html"
    write_html(result, str(report))
    text = report.read_text()
    assert "Per room size" in text and 'data-xlabel="room size (members)"' in text


def test_a_new_plan_moves_the_same_bots_to_their_new_rooms(fast_server: TestServer) -> None:
    """Membership is durable: the bots of a run with another plan are still in the rooms
    of the run before, and part them first, or they would receive what this plan does
    not expect them to."""
    first = run_load(rooms_run(fast_server.port, room_sizes="zipf"))
    assert first.ok
    cfg = rooms_run(fast_server.port, room_sizes="uniform", rooms=4, rooms_per_bot=2, senders=4)
    second = run_load(cfg)
    assert second.ok and second.foreign == 0
    assert [r["members"] for r in second.rooms] == [6, 6, 6, 6]  # 12 bots x 2 rooms
    for row in second.rooms:
        assert row["sent"] > 0 and row["delivered"] == row["expected"] > 0, row
    plan = plan_rooms(12, 4, "uniform", 2, cfg.seed)
    names = make_names(12, cfg.seed)
    members = server_members(fast_server.port, list(plan.names))
    for name, bots in zip(plan.names, plan.members, strict=True):
        assert members[name] == {names[i] for i in bots}


def test_rooms_over_churn_lose_and_duplicate_nothing(fast_server: TestServer) -> None:
    """Receivers cut and resumed: the replay covers every room they are in."""
    cfg = rooms_run(fast_server.port, clients=16, senders=4, rooms=4, rate=200.0, churn=8.0)
    cfg.duration = 2.0
    result = run_load(cfg)
    assert result.resumes >= 5 and result.ok
    assert result.foreign == 0 and result.delivered == result.expected
    assert all(r["lost"] == r["duplicates"] == 0 for r in result.rooms)


def test_a_server_without_rooms_fails_every_login_saying_why() -> None:
    with quiet_server(history=False) as srv:  # rooms need the message log
        result = run_load(rooms_run(srv.port, clients=4, rooms=2, processes=1))
    assert not result.ok and result.logged_in == 0 and len(result.login_failures) == 4
    assert all("offers no rooms" in f for f in result.login_failures)


def test_the_recorder_counts_a_delivery_outside_its_room_as_foreign() -> None:
    plan = plan_rooms(6, 2, "uniform", 1, seed=1)  # two rooms of 3
    rec = Recorder(plan)
    room0, room1 = plan.members
    sender = room0[0]
    inside, outside = room0[1], room1[0]
    t = int(time.monotonic() * 1e6)
    rec.begin(t / 1e6)
    text = pack(sender, 0, t, 60, room=0)
    rec.sent(0, 0.0, t / 1e6)
    rec.deliveries(
        [
            (inside, text, t + 500, "load-0"),
            (outside, text, t + 500, "load-0"),  # not a member
            (room0[2], text, t + 500, "load-1"),  # a member, under another room's name
            (room0[2], text, t + 500, None),  # a member, as a lobby message
            (outside, pack(sender, 1, t, 60), t + 500, "load-1"),  # a DM in a room frame
            (room0[2], text, t + 600, "LOAD-0"),  # the room, spelled another way
        ]
    )
    final = rec.final()
    assert final["foreign"] == 4
    assert final["delivered"] == 2 and final["delivered_by_room"] == {0: 2}
    assert final["sent_by_room"] == {0: 1}
    assert final["expected_by_second"][0] == 2  # the room's two other members
    assert set(final["latency_by_size"]) == {size_label(3)}


def test_payloads_name_their_room() -> None:
    text = pack(12, 345, 6789, 80, room=7)
    assert len(text) == 80 and unpack_room(text) == (12, 345, 6789, 7)
    assert unpack(text) == (12, 345, 6789)
    assert unpack_room(pack(1, 2, 3, 40)) == (1, 2, 3, None)


@given(
    clients=st.integers(2, 300),
    rooms=st.integers(1, 60),
    per_bot=st.integers(1, 5),
    zipf=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_a_plan_puts_every_bot_in_its_rooms(
    clients: int, rooms: int, per_bot: int, zipf: bool, seed: int
) -> None:
    dist: Distribution = "zipf" if zipf else "uniform"
    if per_bot > rooms or clients * per_bot < 2 * rooms:
        with pytest.raises(ValueError):
            plan_rooms(clients, rooms, dist, per_bot, seed)
        return
    plan = plan_rooms(clients, rooms, dist, per_bot, seed)
    assert plan.sizes == sorted(plan.sizes, reverse=True)
    assert all(2 <= s <= clients for s in plan.sizes)
    assert all(len(set(m)) == len(m) for m in plan.members)
    # Every bot in exactly per_bot distinct rooms.
    counts = Counter(b for m in plan.members for b in m)
    assert set(counts) == set(range(clients)) and set(counts.values()) == {per_bot}
    if not zipf:
        assert max(plan.sizes) - min(plan.sizes) <= 1
    assert plan == plan_rooms(clients, rooms, dist, per_bot, seed)  # the same every time
    senders = plan.senders(min(rooms, clients), clients)
    assert len(set(senders)) == len(senders) == min(rooms, clients)


def test_zipf_is_one_large_room_and_many_small_ones() -> None:
    sizes = room_sizes(1000, 100, "zipf", 1)
    assert sum(sizes) == 1000 and sizes[0] > 150 and sizes[-1] <= 3
    assert sizes[0] > 5 * sizes[9]  # room 1 about ten times room 10


def test_locust_users_draw_their_rooms_from_the_distribution() -> None:
    """A swarm of unknown size (Locust's) draws each user's rooms: zipf in expectation."""
    rng = random.Random(3)
    draws = [choose_rooms(10, "zipf", 2, rng) for _ in range(2000)]
    assert all(len(set(d)) == 2 and d == sorted(d) for d in draws)
    counts = Counter(r for d in draws for r in d)
    assert counts["load-0"] > 2 * counts["load-4"] > 0 and set(counts) == {
        f"load-{k}" for k in range(10)
    }
    with pytest.raises(ValueError):
        choose_rooms(3, "uniform", 4, rng)


def test_reconcile_parts_what_the_plan_leaves_out() -> None:
    assert reconcile(["Load-1", "load-9"], ["load-1", "load-2"]) == (["load-9"], ["load-2"])


def test_impossible_room_settings_are_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["run", "--port", "1", "--clients", "4", "--rooms", "3"]
    assert chat_load(argv) == 2
    assert "3 rooms of at least 2 members need 6 memberships" in capsys.readouterr().err
    assert chat_load([*argv[:-1], "2", "--rooms-per-bot", "3"]) == 2
    assert "--rooms-per-bot must be from 1 to --rooms (2)" in capsys.readouterr().err
