"""Both clients' moderation calls (docs/PROTOCOL.md §Moderation) against a real server:
what each returns, the typed refusals, and a kicked or banned client dropping the room
from its rooms when the event naming it arrives."""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import time

import pytest

from chatroom import Banned, ChatClient, Disconnect, RoomError, ServerNotice
from chatroom.aio import AsyncChatClient
from chatroom.errors import ServerError
from chatroom.events import RoomEvent
from chatroom.testing import running_server
from chatroom_server import servergate

T = 10.0
PW = "correct horse"


def test_the_threaded_client_kicks_bans_and_mutes() -> None:
    with running_server(users_interval=0, rate_limit=None) as srv:
        a = ChatClient(srv.host, srv.port, rooms=True)
        b = ChatClient(srv.host, srv.port, rooms=True)
        seen: queue.Queue[RoomEvent] = queue.Queue()
        b.on_room_event(seen.put)
        with a, b:
            a.login("ann", PW)
            b.login("ben", PW)
            a.join("dev")
            b.join("dev")
            with pytest.raises(RoomError) as err:
                b.kick("dev", "ann")
            assert err.value.code == "not_operator"

            r = a.mute("dev", "ben", reason="hush", duration=600)
            assert r.to == "ben" and r.seq is not None
            with pytest.raises(RoomError) as err:
                b.pm("hello", room="dev")
            assert err.value.code == "muted"
            assert a.unmute("dev", "ben").seq is not None
            assert a.unmute("dev", "ben").seq is None  # nothing to undo

            a.kick("dev", "ben", reason="out")
            ev = seen.get(timeout=T)
            while ev.event != "kick":
                ev = seen.get(timeout=T)
            assert (ev.user, ev.by, ev.reason) == ("ben", "ann", "out") and b.rooms == ()

            b.join("dev")
            a.ban("dev", "ben", reason="spam", duration=3600)
            ev = seen.get(timeout=T)
            while ev.event != "ban":
                ev = seen.get(timeout=T)
            assert ev.expires is not None and ev.expires > ev.ts and b.rooms == ()
            with pytest.raises(Banned) as banned:  # a RoomError, typed, with the ban's fields
                b.join("dev")
            assert banned.value.code == "banned" and "spam" in banned.value.message
            assert (banned.value.reason, banned.value.expires) == ("spam", ev.expires)
            (entry,) = a.bans("dev")
            assert (entry.user, entry.by, entry.reason) == ("ben", "ann", "spam")
            a.unban("dev", "ben")
            assert a.bans("dev") == ()
            assert b.join("dev").members == ("ann", "ben")
            with pytest.raises(RoomError) as err:
                a.audit()
            assert err.value.code == "not_operator"
            db = sqlite3.connect(srv.db_path)
            try:
                servergate.grant(servergate.SqliteSql.of(db), "ann")
            finally:
                db.close()
            entries = a.audit("dev", limit=2)
            assert [(e.action, e.by, e.user) for e in entries] == [
                ("unban", "ann", "ben"),
                ("ban", "ann", "ben"),
            ]
            assert entries[1].detail["expires"] == entries[1].ts + 3600


def test_the_asyncio_client_kicks_bans_and_mutes() -> None:
    async def run(host: str, port: int) -> None:
        a = AsyncChatClient(host, port, rooms=True)
        b = AsyncChatClient(host, port, rooms=True)
        async with a, b:
            await a.login("ann", PW)
            await b.login("ben", PW)
            await a.join("dev")
            await b.join("dev")
            await a.mute("dev", "ben")
            with pytest.raises(RoomError):
                await b.pm("hello", room="dev")
            await a.unmute("dev", "ben")
            await a.kick("dev", "ben")
            await b.join("dev")
            await a.ban("dev", "ben", reason="spam")
            with pytest.raises(RoomError) as err:
                await b.join("dev")
            assert err.value.code == "banned"
            assert [e.user for e in await a.bans("dev")] == ["ben"]
            await a.unban("dev", "ben")
            assert await a.bans("dev") == ()
            with pytest.raises(RoomError):
                await a.audit()

    with running_server(users_interval=0, rate_limit=None) as srv:
        asyncio.run(asyncio.wait_for(run(srv.host, srv.port), T * 3))


def test_a_client_banned_from_the_server_is_told_and_stops_reconnecting() -> None:
    """docs/PROTOCOL.md §Moderation, Server-wide: the ban ends the session; the client
    tries once more, is refused, and ends without knocking again every backoff."""
    with running_server(users_interval=0, rate_limit=None) as srv:
        c = ChatClient(srv.host, srv.port, reconnect=True)
        ends: queue.Queue[Disconnect] = queue.Queue()
        notices: queue.Queue[ServerNotice] = queue.Queue()
        c.on_disconnect(ends.put)
        c.on_notice(notices.put)
        try:
            c.connect()
            c.login("mallory", PW)
            db = sqlite3.connect(srv.db_path, isolation_level=None)
            try:
                servergate.ban(servergate.SqliteSql.of(db), "mallory", "spam", None, time.time())
            finally:
                db.close()
            told = notices.get(timeout=T)
            assert told.error.code == "banned" and "spam" in str(told.error)
            # The bye after the ban ends it at once: no reconnect to be refused.
            last = ends.get(timeout=T)
            assert (last.reason, last.will_reconnect) == ("banned", False)
            assert isinstance(last.error, Banned) and last.error.reason == "spam"
            assert last.error.expires is None and "spam" in last.error.message
            assert ends.empty()
        finally:
            c.close()


def test_a_login_refused_by_a_server_ban_keeps_its_reason_and_end() -> None:
    """docs/PROTOCOL.md §Moderation, Server-wide: the refusal is a typed Banned with the
    ban's reason and end, as well as the words that say them."""
    with running_server(users_interval=0, rate_limit=None) as srv:
        with ChatClient(srv.host, srv.port) as c:
            c.login("mallory", PW)
        now = time.time()
        db = sqlite3.connect(srv.db_path, isolation_level=None)
        try:
            servergate.ban(servergate.SqliteSql.of(db), "mallory", "spam", now + 3600, now)
        finally:
            db.close()
        with ChatClient(srv.host, srv.port) as c, pytest.raises(Banned) as err:
            c.login("mallory", PW)
        assert (err.value.reason, err.value.expires) == ("spam", now + 3600)
        assert "spam" in err.value.message and " UTC" in err.value.message


def _grant(db_path: object, name: str) -> None:
    db = sqlite3.connect(str(db_path), isolation_level=None)
    try:
        assert servergate.grant(servergate.SqliteSql.of(db), name)
    finally:
        db.close()


def test_both_clients_ban_addresses_as_server_operators() -> None:
    """docs/PROTOCOL.md §Bans by address: ban_address/unban_address, the canonical
    network in the receipt, the list to server operators, typed refusals."""

    async def run(host: str, port: int) -> None:
        a = AsyncChatClient(host, port, rooms=True)
        async with a:
            await a.login("ann", PW)
            r = await a.ban_address("dev", "2001:DB8::/32", reason="spam", duration=60)
            assert r.to == "2001:db8::/32" and r.seq is not None
            listed = await a.bans("dev")
            assert [(e.address, e.user, e.reason) for e in listed] == [
                ("198.51.100.0/24", "", None),
                ("2001:db8::/32", "", "spam"),
            ]
            assert (await a.unban_address("dev", "2001:db8::/32")).seq is not None
            assert (await a.unban_address("dev", "2001:db8::/32")).seq is None

    with running_server(users_interval=0, rate_limit=None) as srv:
        a = ChatClient(srv.host, srv.port, rooms=True)
        b = ChatClient(srv.host, srv.port, rooms=True)
        with a, b:
            a.login("ann", PW)
            b.login("ben", PW)
            _grant(srv.db_path, "ann")
            b.join("dev")  # ben owns dev; ann, a server operator, is not in it
            with pytest.raises(RoomError) as err:
                b.ban_address("dev", "198.51.100.7")
            assert err.value.code == "not_operator" and "private" in str(err.value)
            r = a.ban_address("dev", "198.51.100.0/24")
            assert (r.to, r.seq is not None) == ("198.51.100.0/24", True)
            with pytest.raises(ServerError) as bad:
                a.ban_address("dev", "127.0.0.1")  # ann's own address
            assert bad.value.code == "bad_request"
            with pytest.raises(ServerError) as bad:
                a.ban_address("dev", "198.51.100.7/24")
            assert "did you mean 198.51.100.0/24" in str(bad.value)
            assert [e.user for e in b.bans("dev")] == []  # not shown to a room's owner
            # The asyncio client as ann (her session taken over) sees the same list.
            asyncio.run(asyncio.wait_for(run(srv.host, srv.port), T * 3))
