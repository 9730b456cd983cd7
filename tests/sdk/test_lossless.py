"""Lossless clients (docs/SDK.md "Nothing lost"): resume across cuts, resends by cid,
cursor files, history, offline DMs, against a real server and a proxy that cuts."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatroom import (
    Broadcast,
    ChatClient,
    DirectMessage,
    Reconnected,
)
from chatroom.testing import TestServer
from tests.helpers import CutProxy

PW = "lossless password"
T = 10.0


@pytest.fixture
def proxy(server: TestServer) -> Iterator[CutProxy]:
    p = CutProxy(server.address)
    yield p
    p.close()


def client(address: tuple[str, int], name: str, **kw: object) -> ChatClient:
    c = ChatClient(address[0], address[1], reconnect_max_delay=0.5, **kw)  # type: ignore[arg-type]
    c.connect()
    c.login(name, PW)
    return c


def test_hooks_see_every_message_once_in_order_across_cuts(
    server: TestServer, proxy: CutProxy
) -> None:
    got: queue.Queue[Broadcast] = queue.Queue()
    reconnects: queue.Queue[Reconnected] = queue.Queue()
    listener = ChatClient(*proxy.address, reconnect=True, reconnect_max_delay=0.5)
    listener.on_broadcast(got.put)
    listener.on_reconnect(reconnects.put)
    with listener:
        listener.login("listener", PW)
        with ChatClient(*server.address) as sender:
            sender.login("sender", PW)
            total = 300
            stop = threading.Event()

            def send_all() -> None:
                for i in range(total):
                    if stop.is_set():
                        return
                    sender.pm(f"n{i}")

            t = threading.Thread(target=send_all, daemon=True)
            t.start()
            seen: list[Broadcast] = []
            back: list[Reconnected] = []
            try:
                while len(seen) < total:
                    seen.append(got.get(timeout=T))
                    if len(seen) in (40, 140, 240):
                        if back or len(seen) > 40:
                            back.append(reconnects.get(timeout=T))  # connected again
                        proxy.cut()  # mid-stream, while the sender keeps going
            finally:
                stop.set()
                t.join(T)
            assert [b.message for b in seen] == [f"n{i}" for i in range(total)]
            seqs = [b.seq for b in seen]
            assert seqs == sorted(seqs) and len(set(seqs)) == total  # type: ignore[type-var]
            assert got.empty()
            back.append(reconnects.get(timeout=T))
            assert proxy.cuts == 3 and len(back) == 3
            assert sum(r.replayed for r in back) == sum(b.replayed for b in seen)
            assert not any(r.replay_truncated for r in back)


def test_a_pm_whose_ack_was_lost_returns_on_the_new_connection_stored_once(
    server: TestServer, proxy: CutProxy
) -> None:
    with ChatClient(*proxy.address, reconnect=True, reconnect_max_delay=0.5) as c:
        c.login("resender", PW)
        proxy.cut_on(b'"type":"ack"')  # the server stores it; the ack never arrives
        receipt = c.pm("exactly once")
        assert proxy.cuts == 1 and receipt.seq is not None
        page = c.history(limit=10)
        assert [m.message for m in page.messages] == ["exactly once"]
        assert page.messages[0].seq == receipt.seq


def test_dm_receipts_say_queued_and_offline_dms_arrive_at_login(server: TestServer) -> None:
    with ChatClient(*server.address) as away:
        away.login("away2", PW)
    with ChatClient(*server.address) as a:
        a.login("writer3", PW)
        r1 = a.dm("AWAY2", "first")
        r2 = a.dm("away2", "second")
        assert (r1.to, r1.queued, r2.queued) == ("away2", True, True)
        assert r2.seq == r1.seq + 1  # type: ignore[operator]
        got: queue.Queue[DirectMessage] = queue.Queue()
        b = ChatClient(*server.address)
        b.on_dm(got.put)
        with b:
            result = b.login("away2", PW)  # returns once the DMs went to the hooks
            assert result.replayed == 2 and not result.replay_truncated
            dms = [got.get(timeout=T) for _ in range(2)]
            assert [(d.message, d.replayed) for d in dms] == [("first", True), ("second", True)]
            assert a.dm("away2", "live").queued is False
            assert got.get(timeout=T).replayed is False


def test_history_pages_and_iter_history_walks_everything(server: TestServer) -> None:
    with ChatClient(*server.address) as c:
        c.login("historian", PW)
        for i in range(120):
            c.pm(f"h{i}", wait=i % 10 == 9)  # acks are waited for now and then
        c.pm("last")
        page = c.history(limit=50)
        assert [m.message for m in page.messages] == [*(f"h{i}" for i in range(71, 120)), "last"]
        assert page.has_more
        older = c.history(before=page.messages[0].seq, limit=100)
        assert [m.message for m in older.messages][-1] == "h70" and not older.has_more
        walked = [m.message for m in c.iter_history(page=30)]
        assert walked == ["last", *(f"h{i}" for i in reversed(range(120)))]
        c.dm("historian", "note to self")
        (mine,) = c.history(with_user="historian").messages
        assert (mine.kind, mine.sender, mine.to) == ("dm", "historian", "historian")


def test_resume_from_a_seq(server: TestServer) -> None:
    with ChatClient(*server.address) as s:
        s.login("source", PW)
        mark = s.pm("before the mark").seq
        s.pm("after the mark")
        got: queue.Queue[Broadcast] = queue.Queue()
        late = ChatClient(*server.address, resume_from=mark)
        late.on_broadcast(got.put)
        with late:
            result = late.login("latecomer", PW)
            assert result.replayed == 1
            first = got.get(timeout=T)
            assert (first.message, first.replayed) == ("after the mark", True)
            assert late.cursor == result.seq


def test_a_restarted_bot_with_a_cursor_file_sees_each_message_once(
    server: TestServer, tmp_path: Path
) -> None:
    cursor = tmp_path / "bot.cursor"
    seen: list[str] = []

    def run_bot() -> tuple[ChatClient, queue.Queue[Broadcast]]:
        got: queue.Queue[Broadcast] = queue.Queue()
        bot = ChatClient(*server.address, cursor_file=cursor)
        bot.on_broadcast(got.put)
        bot.connect()
        bot.login("cursorbot", PW)
        return bot, got

    with ChatClient(*server.address) as s:
        s.login("speaker", PW)
        bot, got = run_bot()
        last = None
        for i in range(5):
            last = s.pm(f"one {i}").seq
        seen += [got.get(timeout=T).message for _ in range(5)]
        bot.close()  # writes the cursor at close
        assert json.loads(cursor.read_text())["seq"] == last
        for i in range(5):
            s.pm(f"two {i}")  # while the bot is down
        bot, got = run_bot()
        seen += [got.get(timeout=T).message for _ in range(5)]
        s.pm("three")
        seen.append(got.get(timeout=T).message)
        bot.close()
    assert seen == [*(f"one {i}" for i in range(5)), *(f"two {i}" for i in range(5)), "three"]


def test_a_broken_cursor_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.cursor"
    bad.write_text("{not json")
    with pytest.raises(Exception, match="cursor file"):
        ChatClient("127.0.0.1", 1, cursor_file=bad)


def test_a_cursor_file_covers_what_the_bot_itself_sent(server: TestServer, tmp_path: Path) -> None:
    """The cursor file moves on the acks of the bot's own sends: a restarted bot is not
    handed back what it said itself, and still gets what was said to it meanwhile."""
    cursor = tmp_path / "sayer.cursor"
    got: queue.Queue[object] = queue.Queue()

    def run_bot() -> ChatClient:
        bot = ChatClient(*server.address, cursor_file=cursor)
        for hook in (bot.on_broadcast, bot.on_dm, bot.on_dm_sent):
            hook(got.put)
        bot.connect()
        return bot

    with ChatClient(*server.address) as peer:
        peer.login("listener2", PW)
        bot = run_bot()
        bot.login("sayer", PW)
        bot.pm("said in public")
        told = bot.dm("listener2", "told in private")
        bot.close()
        assert json.loads(cursor.read_text())["seq"] == told.seq
        peer.dm("sayer", "while you were down")
        bot = run_bot()
        with bot:
            assert bot.login("sayer", PW).replayed == 1
            dm = got.get(timeout=T)
            assert isinstance(dm, DirectMessage) and dm.message == "while you were down"
    assert got.empty()


def test_the_guides_answering_bot_never_answers_itself_after_a_restart(
    server: TestServer,
) -> None:
    """The bot of README.md and docs/SDK.md answers ``event.sender`` in on_dm. After a
    server restart its own answers came back to on_dm, replayed, and it DMed itself in a
    loop (19 self-DMs until rate-limited; 398 in one second without flood control)."""
    client = ChatClient(*server.address, reconnect=True, reconnect_max_delay=0.3)
    to_itself: list[DirectMessage] = []

    @client.on_dm
    def on_private(event: DirectMessage) -> None:
        if event.sender == "timebot":
            to_itself.append(event)
        client.dm(event.sender, f"you said: {event.message}")

    back: queue.Queue[Reconnected] = queue.Queue()
    client.on_reconnect(back.put)
    with client:
        client.login("timebot", PW)
        me = ChatClient(*server.address, reconnect=True, reconnect_max_delay=0.3)
        answers: queue.Queue[DirectMessage] = queue.Queue()
        me.on_dm(answers.put)
        with me:
            me.login("asker", PW)
            me.dm("timebot", "hello")
            assert answers.get(timeout=T).message == "you said: hello"
            with me.expect(Reconnected) as me_back:
                server.restart()
                assert back.get(timeout=T).replayed == 0
                me_back.wait(T)
            me.dm("timebot", "marker")
            # Hooks run in order: had the replay reached on_dm, it would be before this.
            assert answers.get(timeout=T).message == "you said: marker"
            assert answers.empty()
        assert to_itself == []
