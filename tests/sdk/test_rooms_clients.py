"""Both clients' room API (docs/PROTOCOL.md §Rooms) against a scripted server: a real
socket on 127.0.0.1 whose thread answers each command from a table, so the clients are
tested before the server speaks rooms. What each call sends, what it returns, the
rooms a client keeps, the room_event hook and wait_for by room."""

from __future__ import annotations

import asyncio
import json
import queue
import socket
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from chatroom import ChatClient, RoomError, UsageError
from chatroom.aio import AsyncChatClient
from chatroom.events import Broadcast, Receipt, RoomEvent
from chatroom.rooms import RoomInfo, RoomListing

T = 10.0
X = TypeVar("X")
DEV = {"name": "Dev", "modes": "+t", "members": ["alice", "bob"], "roles": {"alice": "owner"}}


class ScriptedServer:
    """One connection at a time; ``answer(command) -> frames`` replies to each command
    (the reply gets the command's id); :meth:`push` sends a frame unasked. Every command
    received is put on ``received``."""

    def __init__(self, rooms: bool = True) -> None:
        self.rooms = rooms
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(T)
        self.host = "127.0.0.1"
        self.port = self.listener.getsockname()[1]
        self.received: queue.Queue[dict[str, Any]] = queue.Queue()
        self._conn: socket.socket | None = None
        self._ready = threading.Event()
        self._send_lock = threading.Lock()  # the reader thread and push() both write
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        self._conn = conn
        self._ready.set()
        buf = b""
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                cmd = json.loads(line)
                self.received.put(cmd)
                for reply in self.answer(cmd):
                    if "id" in cmd and reply.get("type") != "room_event":
                        reply = {**reply, "id": cmd["id"]}
                    self._send(reply)

    def answer(self, cmd: dict[str, Any]) -> list[dict[str, Any]]:
        c = cmd["command"]
        room = cmd.get("room")
        if c == "login" and "password" not in cmd:
            return [{"type": "password_required", "username": cmd["username"], "new_user": False}]
        if c == "users":
            return [{"type": "users", "users": ["alice", "bob"]}]
        if c == "login":
            ok: dict[str, Any] = {
                "type": "login_ok",
                "username": cmd["username"],
                "new_user": False,
                "users": ["alice", "bob"],
                "seq": 10,
                "epoch": "e",
                "version": 1,
            }
            if self.rooms and "rooms" in cmd.get("features", ()):
                ok.update(version=2, features=["users_delta", "rooms"], rooms=[DEV])
            return [ok]
        if c == "join":
            if room == "locked":
                return [{"type": "error", "code": "bad_key", "message": "wrong key for locked"}]
            info = {"name": room, "modes": "+t", "members": ["alice"], "roles": {"alice": "owner"}}
            return [{"type": "room_info", "info": info, "seq": 11}]
        if c == "part":
            return [{"type": "ack", "command": "part", "room": "Dev", "seq": 12}]
        if c == "rooms":
            listing = [{"name": "Dev", "count": 2, "joined": True}, {"name": "Zoo", "count": 9}]
            return [{"type": "rooms", "rooms": listing}]
        if c == "members" or (c == "topic" and "topic" not in cmd):
            return [{"type": "room_info", "info": {**DEV, "topic": "ship it"}}]
        if c in ("topic", "invite", "mode"):
            ack = {"type": "ack", "command": c, "room": "Dev", "seq": 13}
            return [{**ack, "to": "Carol"} if c == "invite" else ack]
        if c == "pm":
            return [{"type": "ack", "command": "pm", "room": room, "seq": 14}]
        if c == "history":
            message = {"seq": 5, "kind": "pm", "from": "bob", "message": "m", "ts": 1.0}
            return [{"type": "history", "messages": [{**message, "room": room}], "has_more": False}]
        return []

    def push(self, frame: dict[str, Any]) -> None:
        assert self._ready.wait(T)
        self._send(frame)

    def _send(self, frame: dict[str, Any]) -> None:
        assert self._conn is not None
        with self._send_lock:
            self._conn.sendall(json.dumps(frame).encode() + b"\n")

    def command(self, name: str) -> dict[str, Any]:
        """The next command received named ``name`` (others are skipped)."""
        while True:
            cmd = self.received.get(timeout=T)
            if cmd["command"] == name:
                return cmd

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self.listener.close()
        self._thread.join(T)


class Sync:
    """A client whichever it is, as blocking calls: ``call("join", "dev")``."""

    def __init__(self, kind: str, port: int, rooms: bool) -> None:
        self.kind = kind
        if kind == "threads":
            self.c: Any = ChatClient("127.0.0.1", port, rooms=rooms, keepalive=0)
            self.c.connect()
            return
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.c = AsyncChatClient("127.0.0.1", port, rooms=rooms, keepalive=0)
        self._run(self.c.connect())

    def _run(self, coro: Coroutine[Any, Any, X]) -> X:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(T + 5)

    def call(self, name: str, *args: Any, **kw: Any) -> Any:
        result = getattr(self.c, name)(*args, **kw)
        return self._run(result) if self.kind == "asyncio" else result

    def wait_for(self, kind: type[X], check: Callable[[X], bool], cause: Callable[[], None]) -> X:
        """``wait_for(kind, check)``, with ``cause()`` called once the waiter is in
        place (what arrives before a wait_for call is not its business)."""
        if self.kind == "threads":
            with self.c.expect(kind, check=check) as waiter:
                cause()
                got: X = waiter.wait(T)
            return got

        async def waited() -> X:
            before = len(self.c._waiters)
            task = asyncio.ensure_future(self.c.wait_for(kind, check, T))
            while len(self.c._waiters) == before and not task.done():
                await asyncio.sleep(0)  # until the waiter is registered (white-box)
            cause()
            result: X = await task
            return result

        return self._run(waited())

    def close(self) -> None:
        if self.kind == "threads":
            self.c.close()
            return
        self._run(self.c.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(T)
        self.loop.close()


@pytest.fixture(params=["threads", "asyncio"])
def pair(request: pytest.FixtureRequest) -> Iterator[Callable[..., tuple[Sync, ScriptedServer]]]:
    made: list[tuple[Sync, ScriptedServer]] = []

    def factory(rooms: bool = True, server_rooms: bool = True) -> tuple[Sync, ScriptedServer]:
        srv = ScriptedServer(rooms=server_rooms)
        client = Sync(request.param, srv.port, rooms)
        made.append((client, srv))
        return client, srv

    yield factory
    for client, srv in made:
        client.close()
        srv.close()


def test_every_room_call_sends_its_command_and_returns_its_reply(
    pair: Callable[..., tuple[Sync, ScriptedServer]],
) -> None:
    c, srv = pair()
    c.call("login", "alice", "correct horse")
    assert c.c.rooms_on and [r.name for r in c.c.rooms] == ["Dev"]

    info = c.call("join", "ops", key="k")
    assert isinstance(info, RoomInfo) and info.roles == {"alice": "owner"}
    join = srv.command("join")
    assert (join["room"], join["key"]) == ("ops", "k")
    assert [r.name for r in c.c.rooms] == ["Dev", "ops"]

    assert c.call("list_rooms") == (
        RoomListing(name="Dev", count=2, joined=True),
        RoomListing(name="Zoo", count=9),
    )
    assert c.call("members", "dev") == ("alice", "bob")
    assert srv.command("members")["room"] == "dev"
    assert c.call("topic", "dev") == "ship it"
    assert "topic" not in srv.command("topic")
    assert c.call("set_topic", "dev", "") == Receipt(None, 13)
    assert srv.command("topic")["topic"] == ""
    assert c.call("invite", "dev", "carol") == Receipt("Carol", 13)
    assert c.call("mode", "dev", "+kl", "pw", "5") == Receipt(None, 13)
    mode = srv.command("mode")
    assert (mode["modes"], mode["args"]) == ("+kl", ["pw", "5"])

    assert c.call("pm", "hi dev", room="Dev").seq == 14
    assert srv.command("pm")["room"] == "Dev"
    page = c.call("history", room="Dev")
    assert page.messages[0].room == "Dev" and srv.command("history")["room"] == "Dev"

    assert c.call("part", "dev", reason="later") == Receipt(None, 12)
    part = srv.command("part")
    assert (part["room"], part["reason"]) == ("dev", "later")
    assert [r.name for r in c.c.rooms] == ["ops"]

    with pytest.raises(RoomError) as err:
        c.call("join", "locked")
    assert err.value.code == "bad_key" and "wrong key" in err.value.message


def test_room_events_reach_the_hook_and_wait_for(
    pair: Callable[..., tuple[Sync, ScriptedServer]],
) -> None:
    c, srv = pair()
    got: queue.Queue[RoomEvent] = queue.Queue()
    c.c.on_room_event(got.put)
    c.call("login", "alice", "correct horse")
    srv.push(
        {
            "type": "room_event",
            "room": "Zoo",
            "event": "invite",
            "by": "bob",
            "user": "alice",
            "ts": 1.0,
            "seq": 20,
        }
    )
    srv.push(
        {
            "type": "room_event",
            "room": "Dev",
            "event": "topic",
            "by": "bob",
            "topic": "new",
            "ts": 1.0,
            "seq": 21,
        }
    )
    first, second = got.get(timeout=T), got.get(timeout=T)
    assert (first.event, first.room, first.user) == ("invite", "Zoo", "alice")
    assert (second.event, second.topic) == ("topic", "new")
    assert c.c.rooms[0].topic == "new"  # the rooms show the change when the hook runs

    def later() -> None:
        for seq, room in ((22, "lobby"), (23, "Dev")):
            srv.push(
                {
                    "type": "broadcast",
                    "from": "bob",
                    "message": room,
                    "ts": 1.0,
                    "seq": seq,
                    "room": room,
                }
            )

    b = c.wait_for(Broadcast, lambda e: e.room == "Dev", later)
    assert b.message == "Dev"


def test_without_rooms_room_calls_refuse_before_sending(
    pair: Callable[..., tuple[Sync, ScriptedServer]],
) -> None:
    for rooms, server_rooms, why in [
        (False, True, "without rooms=True"),
        (True, False, "did not turn rooms on"),
    ]:
        c, srv = pair(rooms=rooms, server_rooms=server_rooms)
        c.call("login", "alice", "correct horse")
        assert c.c.rooms == () and not c.c.rooms_on
        for name, args in [("join", ("dev",)), ("list_rooms", ()), ("part", ("dev",))]:
            with pytest.raises(UsageError, match=why):
                c.call(name, *args)
        with pytest.raises(UsageError):
            c.call("pm", "to a room", room="dev")
        # lobby is fine, and goes without a room field, as a v1 client's would
        assert c.call("pm", "to everyone", room="lobby").seq == 14
        assert "room" not in srv.command("pm")


def test_the_threaded_client_against_a_real_server() -> None:
    """The SDK and the server together: rooms, room messages and room events."""
    from chatroom.testing import running_server

    with running_server(users_interval=0, rate_limit=None) as srv:
        a = ChatClient(srv.host, srv.port, rooms=True)
        b = ChatClient(srv.host, srv.port, rooms=True)
        events: queue.Queue[RoomEvent] = queue.Queue()
        heard: queue.Queue[Broadcast] = queue.Queue()
        a.on_room_event(events.put)
        b.on_broadcast(heard.put)
        with a, b:
            a.login("ann", "correct horse")
            b.login("ben", "correct horse")
            assert a.rooms_on and a.join("dev").roles == {"ann": "owner"}
            b.join("DEV")
            assert events.get(timeout=T).by == "ben"
            assert [r.members for r in a.rooms] == [("ann", "ben")]
            receipt = a.pm("hello dev", room="dev")
            got = heard.get(timeout=T)
            assert (got.room, got.message, got.seq) == ("dev", "hello dev", receipt.seq)
            a.set_topic("dev", "ship it")
            assert b.topic("dev") == "ship it"
            page = b.history(room="dev")
            assert [m.message for m in page.messages] == ["hello dev"]
            b.part("dev")
            parted = events.get(timeout=T)
            assert (parted.event, parted.by) == ("part", "ben") and b.rooms == ()
            assert [r.members for r in a.rooms] == [("ann",)]
