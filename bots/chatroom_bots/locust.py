"""Chat users for Locust (``pip install 'chatroom[locust]'``).

A locustfile subclasses :class:`ChatUser` and writes tasks against ``self.chat``, a
:class:`LocustChatClient` (a :class:`chatroom.ChatClient` that reports to Locust)::

    from locust import between, task
    from chatroom_bots.locust import ChatUser

    class Chatter(ChatUser):
        wait_time = between(1, 5)

        @task
        def say(self) -> None:
            self.chat.pm("hello, room")

Then ``locust -f locustfile.py --host chat://127.0.0.1:5050`` (``chats://`` for TLS; the
server should run with ``--password-hash load-test``, since every user registers an
account on its first login). What Locust's statistics show, request type ``chat``:

- ``login``: connect to ``login_ok``; a refusal is a failure.
- ``pm`` and ``dm``: send to the server's ack (the message is stored, docs/PROTOCOL.md
  §Acks); an ``error`` answer or a timeout is a failure.
- ``deliver pm`` and ``deliver dm``: a received message's age, from the server's ``ts``
  to its arrival here (wall clocks: exact on one machine; across machines only as good as
  their clock sync). Replayed messages (docs/PROTOCOL.md §Resume) are not counted.
- ``disconnect``: a connection lost without ``close()``, counted as a failure.

**Rooms** (``--chat-rooms R``, or the class attribute ``rooms``; docs/PROTOCOL.md §Rooms):
every user joins ``rooms_per_user`` of R rooms (``load-0`` ...) drawn from
``--chat-room-sizes`` (``uniform``, or ``zipf``: one large room and many small ones, as
chat-load's ``--rooms``), as one ``join`` request each, and :meth:`ChatUser.say` sends to
them in turn. A room's message is ``deliver pm, room of N`` (N: the room's size class,
2, 3-4, 5-8, ...), so Locust's table shows the latency per room size; one in a room the
user is not in is a failure (``deliver pm, foreign room``).

**gevent.** Importing ``locust`` monkey-patches the standard library with gevent. The
SDK's receive and hook threads then are greenlets, its sockets gevent sockets, its locks,
events and queues gevent's: every blocking call in ChatClient (socket reads with a timeout,
``Event.wait``, ``SimpleQueue.get``) yields to the other users instead of blocking the
process, so one Locust worker process runs hundreds of chat users on one core. Two rules
follow: never import this module (or ``locust``) in a process that did not start under
Locust, and never call a blocking C extension from a hook (it would stall every user of the
worker). Run one worker process per core (``--processes -1`` or ``--worker``), which is
also how Locust spreads a swarm over several machines.
"""

from __future__ import annotations

import functools
import itertools
import os
import random
import time
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar, cast
from urllib.parse import urlsplit

from chatroom.extras import require

require("locust", "chatroom_bots.locust")

from locust import User, events  # noqa: E402
from locust.env import Environment  # noqa: E402

from chatroom import Broadcast, ChatClient, ChatError, DirectMessage, Disconnect, Receipt  # noqa: E402
from chatroom.protocol import DEFAULT_PORT  # noqa: E402
from chatroom.rooms import LOBBY, room_key  # noqa: E402
from chatroom_bots.load.rooms import DISTRIBUTIONS, Distribution, choose_rooms, size_label  # noqa: E402

__all__ = ["ChatUser", "LocustChatClient", "parse_host"]

REQUEST_TYPE = "chat"
R = TypeVar("R")


def parse_host(host: str | None) -> tuple[str, int, bool]:
    """``chat://h:p``, ``chats://h:p`` (TLS) or ``h:p`` -> (host, port, tls)."""
    text = host or f"127.0.0.1:{DEFAULT_PORT}"
    if "://" not in text:
        text = "chat://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("chat", "chats"):
        raise ValueError(f"--host {host!r}: use chat://HOST:PORT or chats://HOST:PORT")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError as exc:
        raise ValueError(f"--host {host!r}: bad port") from exc
    return parts.hostname or "127.0.0.1", port, parts.scheme == "chats"


class LocustChatClient(ChatClient):
    """A ChatClient whose logins, sends and deliveries are Locust requests (module doc)."""

    def __init__(self, environment: Environment, host: str, port: int, **kw: Any) -> None:
        super().__init__(host, port, **kw)
        self._environment = environment
        self._leaving = False  # set by close(): a disconnect after it is no failure
        self.on_broadcast(self._delivered)
        self.on_dm(self._delivered)
        self.on_disconnect(self._lost)

    def _to_locust(
        self, name: str, ms: float, length: int = 0, exc: BaseException | None = None
    ) -> None:
        self._environment.events.request.fire(  # type: ignore[no-untyped-call]
            request_type=REQUEST_TYPE,
            name=name,
            response_time=ms,
            response_length=length,
            exception=exc,
            context={},
        )

    def _timed(self, name: str, call: Callable[..., R], *args: Any) -> R:
        """``call(*args)`` as one Locust request: its time, and a ChatError as a failure."""
        began = time.perf_counter()
        try:
            result = call(*args)
        except ChatError as exc:
            self._to_locust(name, (time.perf_counter() - began) * 1000, exc=exc)
            raise
        self._to_locust(name, (time.perf_counter() - began) * 1000)
        return result

    def login_as(self, username: str, password: str) -> None:
        """Connect (if not connected) and log in, as one ``login`` request."""

        def connect_and_login() -> None:
            if not self.connected:
                self.connect()
            self.login(username, password)

        self._timed("login", connect_and_login)

    def pm(self, message: str, *, room: str | None = None, wait: bool = True) -> Receipt:
        if not wait:
            return super().pm(message, room=room, wait=False)
        return self._timed("pm", functools.partial(super().pm, room=room), message)

    def dm(self, to: str, message: str, *, wait: bool = True) -> Receipt:
        if not wait:
            return super().dm(to, message, wait=False)
        return self._timed("dm", super().dm, to, message)

    def join_room(self, room: str) -> None:
        """Join ``room`` as one ``join`` request."""
        self._timed("join", self.join, room)

    def close(self, timeout: float | None = None) -> None:
        self._leaving = True
        super().close(timeout)

    def _delivered(self, event: Broadcast | DirectMessage) -> None:
        if event.replayed:
            return  # not a live delivery: its age says how long we were away
        age = max(0.0, (time.time() - event.ts) * 1000)
        if isinstance(event, DirectMessage):
            self._to_locust("deliver dm", age, len(event.message))
            return
        if event.room is None or room_key(event.room) == room_key(LOBBY):
            self._to_locust("deliver pm", age, len(event.message))
            return
        key = room_key(event.room)
        info = next((r for r in self.rooms if room_key(r.name) == key), None)
        if info is None:  # the server sent a room we are not in
            why = ConnectionError(f"a message in {event.room}, a room we are not in")
            self._to_locust("deliver pm, foreign room", age, exc=why)
            return
        name = f"deliver pm, room of {size_label(len(info.members))}"
        self._to_locust(name, age, len(event.message))

    def _lost(self, event: Disconnect) -> None:
        if event.reason == "exit" or self._leaving:
            return  # our own close()
        self._to_locust("disconnect", 0.0, exc=ConnectionError(f"connection lost: {event.reason}"))


_serial = itertools.count()


def _room_options(parser: Any) -> None:
    """Locust's own command line gets the rooms' settings (``locust --help`` lists them)."""
    parser.add_argument(
        "--chat-rooms", type=int, default=None, help="rooms the chat users spread over"
    )
    parser.add_argument("--chat-room-sizes", choices=DISTRIBUTIONS, default=None)
    parser.add_argument("--chat-rooms-per-user", type=int, default=None)


events.init_command_line_parser.add_listener(_room_options)  # type: ignore[no-untyped-call]


class ChatUser(User):
    """A Locust user that is logged in to the room as ``self.username`` while it runs.

    Set ``password`` (every user shares it; accounts are registered on first login) and,
    if need be, ``client_options`` (passed to ChatClient: ``timeout``, ``reconnect``...).
    ``rooms`` (0: lobby only), ``room_sizes`` and ``rooms_per_user`` put the users in rooms
    (module doc); ``--chat-rooms``, ``--chat-room-sizes`` and ``--chat-rooms-per-user``
    override them from Locust's command line.
    """

    abstract = True
    password: ClassVar[str] = "locust password"
    client_options: ClassVar[dict[str, Any]] = {}
    rooms: ClassVar[int] = 0
    room_sizes: ClassVar[Distribution] = "uniform"
    rooms_per_user: ClassVar[int] = 1

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.username = self.make_username()
        opts = environment.parsed_options
        rooms = _option(opts, "chat_rooms", self.rooms)
        sizes = _option(opts, "chat_room_sizes", self.room_sizes)
        per_user = _option(opts, "chat_rooms_per_user", self.rooms_per_user)
        # The rooms this user lives in, and the next of them say() sends to.
        self.my_rooms = choose_rooms(rooms, sizes, per_user, random.Random()) if rooms else []
        self._turn = 0
        self.chat = self._client()

    def _client(self, **options: Any) -> LocustChatClient:
        host, port, tls = parse_host(self.host)
        return LocustChatClient(
            self.environment,
            host,
            port,
            tls=tls,
            rooms=bool(self.my_rooms),
            **{"timeout": 10.0, **self.client_options, **options},
        )

    def make_username(self) -> str:
        """A name no other user of the swarm has: this process's pid (unique across a
        machine's workers) and a random part (across machines) and a counter."""
        return f"lc{os.getpid() % 100_000}x{random.randrange(36**4):x}n{next(_serial)}"

    def on_start(self) -> None:
        self.chat.login_as(self.username, self.password)
        for room in self.my_rooms:
            self.chat.join_room(room)

    def say(self, message: str) -> Receipt:
        """A public message: to the user's rooms in turn, or to lobby without rooms."""
        if not self.my_rooms:
            return self.chat.pm(message)
        room = self.my_rooms[self._turn % len(self.my_rooms)]
        self._turn += 1
        return self.chat.pm(message, room=room)

    def on_stop(self) -> None:
        self.chat.close()

    def others(self) -> list[str]:
        """Who else is in the room now (from the live user list)."""
        return [u for u in self.chat.users if u.casefold() != self.username.casefold()]

    def rejoin(self) -> None:
        """Leave the room (EX) and come back as the same user: a new connection and a
        login, with what was missed meanwhile replayed (not counted as deliveries). The
        user is back in its rooms too: membership is durable (docs/PROTOCOL.md §Rooms)."""
        cursor = self.chat.cursor
        self.chat.close()
        self.chat = self._client(resume_from=cursor)
        self.chat.login_as(self.username, self.password)


T = TypeVar("T")


def _option(options: Any, name: str, default: T) -> T:
    """A --chat-* option Locust parsed, else the class's setting."""
    value = getattr(options, name, None)
    return default if value is None else cast(T, value)
