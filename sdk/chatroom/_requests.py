"""The requests of both clients (docs/PROTOCOL.md), written once for each:
:class:`RequestMethods` for :class:`chatroom.ChatClient` (blocking calls) and
:class:`AsyncRequestMethods` for :class:`chatroom.aio.AsyncChatClient` (coroutines), as
:mod:`chatroom._room_api` does for the room commands.

Each is one request built by the session (:class:`~chatroom.session.ClientSession`) and
one typed reply; the client supplies ``_call`` (send with a fresh id, wait for the
:class:`~chatroom.session.Reply` or raise what refused it), ``_request`` (the same, the
reply's frame only) and ``_session``; the blocking one also ``send_command`` (for
``wait=False``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Literal, TypeVar, cast, overload

from chatroom._room_api import room_field
from chatroom.botcommands import BotCommand, BotCommands, BotCommandsCommand, BotEntry
from chatroom.events import HistoryPage, LoginResult, Receipt
from chatroom.protocol import (
    Ack,
    ClientCommand,
    DmCommand,
    History,
    HistoryCommand,
    HistoryMessage,
    LoginOk,
    PasswordRequired,
    PingCommand,
    PmCommand,
    Pong,
    ServerEvent,
    UserList,
    UsersCommand,
)
from chatroom.session import ClientSession, Reply, older_than, receipt
from chatroom.whois import Whois, WhoisCommand

__all__ = ["AsyncRequestMethods", "RequestMethods"]

R = TypeVar("R", bound=ServerEvent)
Build = Callable[[ClientSession], tuple[int, bytes]]


class RequestMethods:
    """:class:`chatroom.ChatClient`'s requests; each blocks until its reply (within the
    client's ``timeout``: :class:`~chatroom.errors.ChatTimeout`) and raises the
    :class:`~chatroom.errors.ServerError` that refused it."""

    _session: ClientSession

    def _call(self, build: Build) -> Reply:
        raise NotImplementedError  # the client's

    def _request(self, reply_type: type[R], build: Build) -> R:
        raise NotImplementedError  # the client's

    def send_command(self, cmd: ClientCommand) -> None:
        raise NotImplementedError  # the client's

    @overload
    def check_user(self, username: str) -> bool: ...
    @overload
    def check_user(self, username: str, *, full: Literal[True]) -> PasswordRequired: ...
    @overload
    def check_user(self, username: str, *, full: bool) -> bool | PasswordRequired: ...

    def check_user(self, username: str, *, full: bool = False) -> bool | PasswordRequired:
        """True if ``username`` is free (a login would register it). For interactive
        clients: ask a new user for a password twice.

        With ``full=True``, the server's whole answer (:class:`PasswordRequired`):
        ``new_user`` and, for a new name, the password lengths the server accepts
        (``min_password``, ``max_password``; None from a server older than them), so a
        bad password can be refused before it is asked for again (docs/PROTOCOL.md
        §login)."""
        reply = self._request(PasswordRequired, lambda s: s.check_user(username))
        return reply if full else reply.new_user

    def login(self, username: str, password: str) -> LoginResult:
        """Log in, registering the account if the name is new.

        Raises :class:`AuthError` (``bad_credentials``, ``weak_password``,
        ``invalid_username``).
        """
        reply = self._call(lambda s: s.login(username, password))
        ok = cast(LoginOk, reply.event)
        return reply.result or LoginResult(ok.username, ok.new_user, ok.users, ok.seq)

    def pm(self, message: str, *, room: str | None = None, wait: bool = True) -> Receipt:
        """Send a public message; returns once the server acknowledged (stored) it, with
        its ``seq``. If the connection breaks first and ``reconnect=True``, it is sent again
        on the new connection, and stored once (docs/PROTOCOL.md §Idempotent sends); the
        call still returns within ``timeout`` or raises :class:`ChatTimeout`. A message
        over the server's limits raises :class:`~chatroom.errors.MessageTooLong`, unsent.

        ``room``: to that room's members (rooms on; default ``lobby``, everyone).

        ``wait=False`` returns as soon as the frame is written (safe in inline hooks, and
        what load generators need); a refusal then arrives as a :class:`ServerNotice`.
        """
        cmd = PmCommand(message=message, room=room_field(self._session, room))
        if not wait:
            self.send_command(cmd)
            return Receipt(None)
        return receipt(self._request(Ack, lambda s: s.request(cmd)))

    def dm(self, to: str, message: str, *, wait: bool = True) -> Receipt:
        """Send a direct message; returns once acknowledged: ``receipt.to`` is the
        recipient's canonical name, ``receipt.queued`` whether they were offline (they get
        it at their next login). Sent again after a reconnect, as for :meth:`pm`.

        Raises :class:`UserOffline` if ``to`` does not exist (or, from a server without a
        message log, is not online). With ``wait=False``, as for :meth:`pm`.
        """
        if not wait:
            self.send_command(DmCommand(to=to, message=message))
            return Receipt(to)
        ack = self._request(Ack, lambda s: s.request(DmCommand(to=to, message=message)))
        return receipt(ack, to)

    def history(
        self,
        *,
        before: int | None = None,
        after: int | None = None,
        limit: int = 50,
        with_user: str | None = None,
        room: str | None = None,
    ) -> HistoryPage:
        """A page of stored messages (docs/PROTOCOL.md §history): ``room``'s (default
        ``lobby``; what we may read of it, §Rooms), or the DM conversation with
        ``with_user``. Newest ``limit`` (1-100) without a cursor; ``before=seq`` pages
        back, ``after=seq`` forward. Messages ascend by seq."""
        cmd = HistoryCommand(
            before=before,
            after=after,
            limit=limit,
            with_user=with_user,
            room=room_field(self._session, room),
        )
        reply = self._request(History, lambda s: s.request(cmd))
        return HistoryPage(reply.messages, reply.has_more)

    def iter_history(
        self,
        *,
        with_user: str | None = None,
        before: int | None = None,
        page: int = 100,
        room: str | None = None,
    ) -> Iterator[HistoryMessage]:
        """Every stored message, newest first, fetched a page at a time as you iterate."""
        while True:
            got = self.history(before=before, limit=page, with_user=with_user, room=room)
            yield from reversed(got.messages)
            before = older_than(got)
            if before is None:
                return

    def request_users(self) -> tuple[str, ...]:
        """Ask the server for the active users (``users`` is usually enough: it follows
        every push)."""
        return self._request(UserList, lambda s: s.request(UsersCommand())).users

    def ping(self) -> float:
        """Round-trip time to the server, in seconds."""
        start = time.perf_counter()
        self._request(Pong, lambda s: s.request(PingCommand()))
        return time.perf_counter() - start

    def announce_commands(self, commands: Sequence[BotCommand], *, prefix: str = "!") -> None:
        """Announce this bot's commands for the rest of the session, replacing what it
        announced before (none: withdraw them); docs/PROTOCOL.md §Bot commands. A REPL
        completes them. Refused with ``bad_request`` past the size limit."""
        cmd = BotCommandsCommand(commands=tuple(commands), prefix=prefix)
        self._request(Ack, lambda s: s.request(cmd))

    def bot_commands(self, user: str | None = None) -> tuple[BotEntry, ...]:
        """The bots online that announced commands (sorted by name), or ``user`` only
        (empty if they announced none)."""
        cmd = BotCommandsCommand(user=user)
        return self._request(BotCommands, lambda s: s.request(cmd)).bots

    def whois(self, user: str) -> Whois:
        """Whether ``user`` is online and a server operator, as the server reads it now
        (docs/PROTOCOL.md §whois); no such account: :class:`~chatroom.errors.UserOffline`
        (``unknown_user``)."""
        cmd = WhoisCommand(user=user)
        return self._request(Whois, lambda s: s.request(cmd))


class AsyncRequestMethods:
    """:class:`chatroom.aio.AsyncChatClient`'s requests: as :class:`RequestMethods`'s,
    awaited."""

    _session: ClientSession

    async def _call(self, build: Build) -> Reply:
        raise NotImplementedError  # the client's

    async def _request(self, reply_type: type[R], build: Build) -> R:
        raise NotImplementedError  # the client's

    @overload
    async def check_user(self, username: str) -> bool: ...
    @overload
    async def check_user(self, username: str, *, full: Literal[True]) -> PasswordRequired: ...
    @overload
    async def check_user(self, username: str, *, full: bool) -> bool | PasswordRequired: ...

    async def check_user(self, username: str, *, full: bool = False) -> bool | PasswordRequired:
        """True if ``username`` is free (a login would register it). With ``full=True``,
        the server's whole answer, the password lengths for a new name included (as
        :meth:`chatroom.ChatClient.check_user`)."""
        reply = await self._call(lambda s: s.check_user(username))
        answer = cast(PasswordRequired, reply.event)
        return answer if full else answer.new_user

    async def login(self, username: str, password: str) -> LoginResult:
        """Log in (registering a new name); returns once what was missed was replayed."""
        reply = await self._call(lambda s: s.login(username, password))
        ok = cast(LoginOk, reply.event)
        return reply.result or LoginResult(ok.username, ok.new_user, ok.users, ok.seq)

    async def pm(self, message: str, *, room: str | None = None) -> Receipt:
        """A public message; returns once the server stored it (resent after a reconnect).
        Over the server's limits: :class:`chatroom.MessageTooLong`, and nothing is sent.
        ``room``: to that room's members (rooms on; default ``lobby``)."""
        cmd = PmCommand(message=message, room=room_field(self._session, room))
        return receipt(await self._request(Ack, lambda s: s.request(cmd)))

    async def dm(self, to: str, message: str) -> Receipt:
        """A direct message; ``receipt.queued`` if the recipient is offline."""
        ack = await self._request(Ack, lambda s: s.request(DmCommand(to=to, message=message)))
        return receipt(ack, to)

    async def request_users(self) -> tuple[str, ...]:
        return (await self._request(UserList, lambda s: s.request(UsersCommand()))).users

    async def ping(self) -> float:
        """Round-trip time to the server, in seconds."""
        start = time.perf_counter()
        await self._request(Pong, lambda s: s.request(PingCommand()))
        return time.perf_counter() - start

    async def announce_commands(self, commands: Sequence[BotCommand], *, prefix: str = "!") -> None:
        """As :meth:`chatroom.ChatClient.announce_commands`."""
        cmd = BotCommandsCommand(commands=tuple(commands), prefix=prefix)
        await self._request(Ack, lambda s: s.request(cmd))

    async def bot_commands(self, user: str | None = None) -> tuple[BotEntry, ...]:
        """As :meth:`chatroom.ChatClient.bot_commands`."""
        cmd = BotCommandsCommand(user=user)
        return (await self._request(BotCommands, lambda s: s.request(cmd))).bots

    async def whois(self, user: str) -> Whois:
        """As :meth:`chatroom.ChatClient.whois`."""
        cmd = WhoisCommand(user=user)
        return await self._request(Whois, lambda s: s.request(cmd))

    async def history(
        self,
        *,
        before: int | None = None,
        after: int | None = None,
        limit: int = 50,
        with_user: str | None = None,
        room: str | None = None,
    ) -> HistoryPage:
        """A page of stored messages (as :meth:`chatroom.ChatClient.history`)."""
        cmd = HistoryCommand(
            before=before,
            after=after,
            limit=limit,
            with_user=with_user,
            room=room_field(self._session, room),
        )
        page = await self._request(History, lambda s: s.request(cmd))
        return HistoryPage(page.messages, page.has_more)

    async def iter_history(
        self,
        *,
        with_user: str | None = None,
        before: int | None = None,
        page: int = 100,
        room: str | None = None,
    ) -> AsyncIterator[HistoryMessage]:
        """Every stored message, newest first, a page at a time."""
        while True:
            got = await self.history(before=before, limit=page, with_user=with_user, room=room)
            for m in reversed(got.messages):
                yield m
            before = older_than(got)
            if before is None:
                return
