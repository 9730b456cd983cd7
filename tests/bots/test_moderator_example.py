"""bots/examples/moderator_bot.py against a real server: a banned word bans its sayer,
a flood gets its sender kicked, and the bot leaves everyone else alone."""

from __future__ import annotations

import queue

import pytest

from chatroom import ChatClient, RoomError
from chatroom.events import RoomEvent
from chatroom.testing import running_server
from tests.bots.test_examples import example

T = 10.0
PW = "correct horse"


def test_the_moderator_bans_words_and_kicks_floods() -> None:
    mod = example("moderator_bot")
    now = [0.0]
    with running_server(users_interval=0, rate_limit=None) as srv:
        bot = ChatClient(srv.host, srv.port, rooms=True)
        alice = ChatClient(srv.host, srv.port, rooms=True)
        bob = ChatClient(srv.host, srv.port, rooms=True)
        seen: queue.Queue[RoomEvent] = queue.Queue()
        alice.on_room_event(seen.put)
        mod.Moderator(bot, max_messages=3, per_seconds=2.0, clock=lambda: now[0])
        # Hooks run in order on the bot's receive thread: when this one sees a message,
        # the moderator has counted it, so the test moves its clock only after that.
        counted: queue.Queue[str] = queue.Queue()
        bot.on_broadcast(lambda e: counted.put(e.message))
        with bot, alice, bob:
            bot.login("modbot", PW)
            alice.login("alice", PW)
            bob.login("bob", PW)
            bot.join("dev")  # it creates the room: its owner
            alice.join("dev")
            bob.join("dev")

            def next_action() -> RoomEvent:
                while True:
                    ev = seen.get(timeout=T)
                    if ev.event in ("kick", "ban"):
                        return ev

            for i in range(3):  # at the limit: fine
                bob.pm(f"hello {i}", room="dev")
            while counted.get(timeout=T) != "hello 2":
                pass
            now[0] = 2.5  # a new window
            for i in range(4):
                bob.pm(f"again {i}", room="dev")
            ev = next_action()
            assert (ev.event, ev.user, ev.by) == ("kick", "bob", "modbot")
            assert ev.reason == "more than 3 messages in 2 s"

            alice.pm("this is a SCAM!", room="dev")
            ev = next_action()
            assert (ev.event, ev.by, ev.reason) == ("ban", "modbot", "said 'scam'")
            assert ev.expires is not None and alice.rooms == ()
            with pytest.raises(RoomError) as err:
                alice.join("dev")
            assert err.value.code == "banned"
            assert [b.user for b in bot.bans("dev")] == ["alice"]
