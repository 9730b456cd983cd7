"""The ``lazy_users`` extension (docs/PROTOCOL.md §lazy_users): a login_ok with the count
and not the names; the reply to ``users`` supersedes the deltas before it and the
deltas after it apply to it; clients that do not ask see exactly what they saw."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

from chatroom.testing import TestServer
from tests.helpers import PASSWORD, RawClient, connect, quiet_server

LAZY = ["users_delta", "lazy_users"]


def lazy_login(c: RawClient, name: str, *counts: int) -> dict[str, Any]:
    c.send(command="login", username=name, password=PASSWORD, features=LAZY)
    ok = c.expect("login_ok", username=name, features=LAZY)
    assert ok["count"] in counts and "users" not in ok, ok
    return ok


def follow(c: RawClient, users: set[str], until: set[str]) -> None:
    """Apply deltas (docs/PROTOCOL.md §users_delta) until the list is ``until``."""
    while users != until:
        f = c.expect("users_delta")
        users.difference_update(f.get("left", []))
        users.update(f.get("joined", []))
        assert len(users) == f["count"], (users, f)


def test_login_ok_counts_and_users_gives_the_list_the_deltas_apply_to(
    server: TestServer,
) -> None:
    old = connect(server.address, "v1user")  # a v1 client: no features asked
    with RawClient(server.address) as lazy, RawClient(server.address) as plain:
        # The list as last published, plus itself: v1user's arrival may still be in
        # the publisher's window (docs/PROTOCOL.md §users_delta).
        lazy_login(lazy, "lazy", 1, 2)
        # A users_delta client that did not ask gets the names, as ever.
        plain.send(command="login", username="plain", password=PASSWORD, features=["users_delta"])
        assert set(plain.expect("login_ok", features=["users_delta"])["users"]) >= {"plain"}
        old.expect("users", joined="lazy")
        old.expect("users", users=["lazy", "plain", "v1user"], joined="plain")  # v1, as ever
        # Deltas keep the count right with no list at all.
        seen = 0
        while seen != 3:
            seen = lazy.expect("users_delta")["count"]
        lazy.send(command="users", id="list")
        users = set(lazy.expect("users", id="list")["users"])
        assert users == {"lazy", "plain", "v1user"}
        with RawClient(server.address) as late:
            lazy_login(late, "Late", 4)  # the three published: the lazy client saw 3
            follow(lazy, users, {"lazy", "plain", "v1user", "Late"})
        follow(lazy, users, {"lazy", "plain", "v1user"})


def test_lazy_users_without_users_delta_is_ignored(server: TestServer) -> None:
    with RawClient(server.address) as c:
        c.send(command="login", username="alone", password=PASSWORD, features=["lazy_users"])
        ok = c.expect("login_ok", users=["alone"])
        assert "features" not in ok and "count" not in ok
        c.expect("users", users=["alone"], joined="alone")


def test_in_a_storm_a_list_asked_for_at_any_point_ends_right() -> None:
    # Each client asks for the list at once: its reply lands somewhere among the
    # storm's deltas, and only the deltas after it apply to it. Then everyone comes
    # back, each login_ok made on the admission thread (FirstLook.first).
    names = [f"lazy{i:02d}" for i in range(40)]
    with quiet_server(password_hash="load-test", users_window=0.05) as srv:
        for _ in range(2):
            with ExitStack() as stack:
                clients = [stack.enter_context(RawClient(srv.address, timeout=30)) for _ in names]
                for c, name in zip(clients, names, strict=True):
                    c.send(command="login", username=name, password=PASSWORD, features=LAZY)
                    c.send(command="users", id="list")
                for c, name in zip(clients, names, strict=True):
                    count = c.expect("login_ok", username=name, features=LAZY)["count"]
                    deltas = 0
                    while (f := c.recv())["type"] == "users_delta":
                        count = f["count"]  # superseded by the reply: the count only
                        deltas += 1
                    assert f["type"] == "users" and f["id"] == "list", f
                    users = set(f["users"])
                    if deltas:
                        # The reply is the list after exactly the deltas before it.
                        assert len(users) == count, (users, count)
                    else:
                        # As login_ok's, but its own arrival may still be to come in a
                        # delta (docs/PROTOCOL.md §users_delta).
                        assert len(users | {name}) == count, (users, count)
                    follow(c, users, set(names))
        assert srv.server._logins.early_logins >= len(names)  # the returns' logins


def test_a_lazy_client_gets_counts_until_it_asks_then_names(server: TestServer) -> None:
    # Until its users reply a lazy client keeps only the count (docs/PROTOCOL.md
    # §lazy_users), so its deltas carry nothing else; a users_delta client without
    # lazy_users gets the names, as ever.
    with RawClient(server.address) as lazy:
        lazy_login(lazy, "lazy", 1)
        plain, joiner = RawClient(server.address), RawClient(server.address)
        plain.send(command="login", username="plain", password=PASSWORD, features=["users_delta"])
        plain.expect("login_ok", features=["users_delta"])
        while (f := lazy.expect("users_delta"))["count"] != 2:
            pass
        assert set(f) == {"type", "count"}, f  # plain's arrival: the count alone
        lazy_login(joiner, "joiner", 3)
        while (f := lazy.expect("users_delta"))["count"] != 3:
            pass
        assert set(f) == {"type", "count"}, f
        while "joiner" not in plain.expect("users_delta").get("joined", []):
            pass
        lazy.send(command="users", id=1)
        users = set(lazy.expect("users", id=1)["users"])
        assert users == {"lazy", "plain", "joiner"}
        plain.close()
        joiner.close()
        # From its reply on, it has the list: the deltas name who left.
        follow(lazy, users, {"lazy"})
