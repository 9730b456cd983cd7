"""``lazy_users`` in the client session (docs/PROTOCOL.md §lazy_users), with no server:
a login_ok with a count and no names; the list, when kept, from the reply to the
``users`` request the session sends, every delta before it superseded by it."""

from __future__ import annotations

import json
from typing import Any

from chatroom import Reconnected
from chatroom.protocol import LoginOk
from chatroom.session import ClientSession, Reply, UsersUpdated

LAZY = ["users_delta", "lazy_users"]
USERS = b'{"command":"users"}\n'


def frame(**fields: Any) -> bytes:
    return json.dumps(fields).encode() + b"\n"


def lazy_ok(rid: object, count: int, name: str = "alice") -> bytes:
    return frame(type="login_ok", username=name, new_user=False, count=count, features=LAZY, id=rid)


def logged_in(count: int, *, track_users: bool = True) -> ClientSession:
    s = ClientSession(lazy_users=True, track_users=track_users)
    s.connection_made(0.0)
    rid, data = s.login("alice", "correct horse")
    assert json.loads(data)["features"] == LAZY
    (reply,) = s.receive_data(lazy_ok(rid, count), 0.0)
    assert isinstance(reply, Reply) and isinstance(reply.event, LoginOk)
    assert reply.result is not None and reply.result.users == ()
    return s


def test_the_count_at_once_and_the_list_from_the_reply_to_users() -> None:
    s = logged_in(3)
    assert s.user_count == 3 and not s.users
    assert s.data_to_send() == USERS  # the list is asked for at once
    # Deltas before the reply: the count follows, the names wait for the list.
    assert s.receive_data(frame(type="users_delta", joined=["carol"], count=4), 0.0) == []
    assert s.receive_data(frame(type="users_delta", left=["zed"], count=3), 0.0) == []
    assert s.user_count == 3 and not s.users and s.data_to_send() == b""
    # The reply already holds them; deltas after it apply to it, count checked.
    events = s.receive_data(frame(type="users", users=["alice", "bob", "carol"]), 0.0)
    assert events == [UsersUpdated((), ())] and s.users == ("alice", "bob", "carol")
    events = s.receive_data(frame(type="users_delta", joined=["dave"], count=4), 0.0)
    assert events == [UsersUpdated(("dave",), ())] and s.user_count == 4
    assert s.data_to_send() == b""
    s.receive_data(frame(type="users_delta", left=["bob"], count=9), 0.0)
    assert s.data_to_send() == USERS  # out of step: the whole list again, as ever


def test_a_session_without_a_list_keeps_the_count_and_asks_for_nothing() -> None:
    s = logged_in(10_000, track_users=False)
    assert s.user_count == 10_000 and s.data_to_send() == b""
    assert s.receive_data(frame(type="users_delta", joined=["x"], count=10_001), 0.0) == []
    assert s.user_count == 10_001 and not s.users and s.data_to_send() == b""


def test_a_server_without_the_extension_sends_the_list_as_ever() -> None:
    s = ClientSession(lazy_users=True)
    rid, _ = s.login("alice", "correct horse")
    ok = frame(
        type="login_ok",
        username="alice",
        new_user=False,
        users=["alice", "bob"],
        features=["users_delta"],
        id=rid,
    )
    s.receive_data(ok, 0.0)
    assert s.users == ("alice", "bob") and s.user_count == 2 and s.data_to_send() == b""


def test_a_relogin_forgets_the_list_until_the_new_reply() -> None:
    s = logged_in(2)
    s.data_to_send()
    s.receive_data(frame(type="users", users=["alice", "bob"]), 0.0)
    s.connection_lost(resend=True)
    relogin = json.loads(s.connection_made(1.0))
    assert relogin["features"] == LAZY
    (event,) = s.receive_data(lazy_ok(relogin["id"], 5), 0.0)
    assert isinstance(event, Reconnected)
    assert not s.users and s.user_count == 5 and s.data_to_send() == USERS


def test_a_session_that_does_not_ask_is_unchanged() -> None:
    s = ClientSession()
    _, data = s.login("alice", "correct horse")
    assert json.loads(data)["features"] == ["users_delta"]
