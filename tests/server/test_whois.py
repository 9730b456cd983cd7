"""whois on a real server (docs/PROTOCOL.md §whois): online or not, and a server
operator as the database says at each ask, granted and revoked with
``chat-server admin``; an unknown user and an impossible name are refused."""

from __future__ import annotations

import asyncio

import pytest

from chatroom import ChatClient, ServerError, UsersChanged
from chatroom.aio import AsyncChatClient
from chatroom.whois import Whois
from chatroom_server.__main__ import main
from tests.helpers import PASSWORD, RawClient, quiet_server

T = 10.0  # seconds: a bound, never a pause


def fields(w: Whois) -> tuple[str, bool, bool]:
    return (w.user, w.online, w.server_operator)


def admin(capsys: pytest.CaptureFixture[str], db: object, *args: str) -> None:
    assert main(["admin", "--db", str(db), *args]) == 0
    capsys.readouterr()


def test_whois_online_and_operator_granted_then_revoked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with quiet_server() as srv, ChatClient(*srv.address) as me:
        me.login("alice", PASSWORD)
        # A join and a leave within one users_delta window cancel out
        # (docs/PROTOCOL.md §users_delta): see the arrival before the departure.
        arrived = me.expect(UsersChanged, check=lambda e: "Oscar" in e.joined)
        with ChatClient(*srv.address) as oscar:
            oscar.login("Oscar", PASSWORD)
            assert fields(me.whois("oscar")) == ("Oscar", True, False)
            admin(capsys, srv.db_path, "grant", "oscar")
            assert me.whois("OSCAR").server_operator is True
            arrived.wait(T)
            gone = me.expect(UsersChanged, check=lambda e: "Oscar" in e.left)
        # A departure is the reaper's to record, after close() returns: the list
        # that says Oscar left is pushed once presence no longer has him.
        gone.wait(T)
        # Logged out: still an account, still an operator, not online.
        assert fields(me.whois("oscar")) == ("Oscar", False, True)
        admin(capsys, srv.db_path, "revoke", "oscar")
        assert me.whois("oscar").server_operator is False
        with pytest.raises(ServerError) as refused:
            me.whois("nobody")
        assert refused.value.code == "unknown_user"


def test_whois_by_the_asyncio_client(capsys: pytest.CaptureFixture[str]) -> None:
    with quiet_server() as srv:
        with ChatClient(*srv.address) as oscar:
            oscar.login("Oscar", PASSWORD)
        admin(capsys, srv.db_path, "grant", "Oscar")

        async def ask() -> Whois:
            async with AsyncChatClient(*srv.address) as me:
                await me.login("alice", PASSWORD)
                return await asyncio.wait_for(me.whois("oscar"), 10)

        assert fields(asyncio.run(ask())) == ("Oscar", False, True)


def test_whois_frames_and_refusals() -> None:
    with quiet_server() as srv:
        raw = RawClient(srv.address)
        raw.send(command="whois", user="alice", id=1)
        assert raw.until("error", id=1)["code"] == "not_logged_in"
        raw.login("alice")
        raw.send(command="whois", user="Alice", id=2)
        assert raw.until("whois", id=2) == {
            "type": "whois",
            "user": "alice",
            "online": True,
            "server_operator": False,
            "id": 2,
        }
        raw.send(command="whois", user="no one", id=3)
        assert raw.until("error", id=3)["code"] == "bad_request"
        raw.send(command="whois", user="ghost", id=4)
        assert raw.until("error", id=4)["code"] == "unknown_user"
        raw.close()
