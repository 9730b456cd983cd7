"""The ``users_delta`` extension (docs/PROTOCOL.md §Extensions), over raw sockets and the
SDK: coalesced, consistent with login_ok and users replies, ordered before messages, and
invisible to v1 clients."""

from __future__ import annotations

import json
import queue
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatroom import ChatClient, UsersChanged
from chatroom.testing import TestServer
from chatroom_server import roster
from chatroom_server.roster import SortedNames
from tests.helpers import PASSWORD, RawClient, connect, quiet_server

T = 10.0


def delta_login(c: RawClient, name: str, **extra: Any) -> dict[str, Any]:
    c.send(command="login", username=name, password=PASSWORD, features=["users_delta"], **extra)
    ok = c.expect("login_ok", username=name, features=["users_delta"])
    return ok


def apply(users: set[str], frame: dict[str, Any]) -> None:
    assert frame["type"] == "users_delta", frame
    users.difference_update(frame.get("left", []))
    users.update(frame.get("joined", []))
    assert len(users) == frame["count"], (users, frame)


def test_login_ok_then_deltas_and_v1_clients_unchanged(server: TestServer) -> None:
    old = connect(server.address, "v1user")  # a v1 client: no features asked
    with RawClient(server.address) as d:
        ok = delta_login(d, "delta")
        users = set(ok["users"])  # what was published, plus itself
        assert "delta" in users
        # Its own arrival comes as a delta too (it was not yet published).
        f = d.expect("users_delta", count=2)
        assert "delta" in f["joined"]
        apply(users, f)
        assert users == {"delta", "v1user"}
        old.expect("users", users=["delta", "v1user"], joined="delta")  # v1, as ever
        with RawClient(server.address) as e:
            delta_login(e, "Echo")
            apply(users, d.expect("users_delta", joined=["Echo"], count=3))
            old.expect("users", joined="Echo")
        apply(users, d.expect("users_delta", left=["Echo"], count=2))
        old.expect("users", left="Echo")
        assert users == {"delta", "v1user"}
        # The users reply of a delta client is the list its deltas apply to.
        d.send(command="users", id=1)
        assert d.expect("users", id=1)["users"] == ["delta", "v1user"]
    old.expect("users", users=["v1user"], left="delta")


def test_a_storm_of_logins_is_coalesced_and_everyone_agrees(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = [f"storm{i:02d}" for i in range(60)]
    with quiet_server(users_window=0.3) as srv:
        # The storm must fall within one window, whatever the machine's load: on a busy
        # box 60 logins can take longer than any window, and the count of deltas then
        # measured the box, not the coalescing. So the publisher waits at its next
        # publication until every login_ok is out; what changed meanwhile is one delta.
        publisher = srv.server._publisher
        storm_over = threading.Event()
        publish = publisher._publish

        def after_the_storm() -> None:
            storm_over.wait(30)
            publish()

        monkeypatch.setattr(publisher, "_publish", after_the_storm)
        barrier = threading.Barrier(len(names), timeout=30)
        clients = {n: RawClient(srv.address, timeout=30) for n in names}

        def login(name: str) -> None:
            barrier.wait()
            clients[name].send(
                command="login", username=name, password=PASSWORD, features=["users_delta"]
            )

        with ThreadPoolExecutor(len(names)) as pool:
            list(pool.map(login, names))
        oks = {name: c.expect("login_ok", username=name) for name, c in clients.items()}
        storm_over.set()
        deltas_seen = []
        for name, c in clients.items():
            users = set(oks[name]["users"])
            assert name in users
            n = 0
            while users != set(names):
                apply(users, c.recv())
                n += 1
            deltas_seen.append(n)
        # 60 logins in a burst; the v1 protocol would push 60 lists to each client.
        assert max(deltas_seen) < 20, deltas_seen
        assert srv.server._publisher.publications < 20
        for c in clients.values():
            c.send(command="users", id="final")
            assert c.until("users", id="final")["users"] == names


def test_joined_delta_precedes_the_new_users_first_message() -> None:
    # A long window: without the announce-before-message rule the PM would overtake it.
    with (
        quiet_server(users_window=30.0) as srv,
        RawClient(srv.address) as old,
    ):
        srv.server._publisher.quiet = 30.0  # no early end either
        delta_login(old, "watcher")
        old.expect("users_delta", joined=["watcher"], count=1)
        new = RawClient(srv.address)
        login = {
            "command": "login",
            "username": "eager",
            "password": PASSWORD,
            "features": ["users_delta"],
        }
        new.send_raw(json.dumps(login).encode() + b"\n" + b'{"command":"pm","message":"first!"}\n')
        old.expect("users_delta", joined=["eager"], count=2)
        old.expect("broadcast", message="first!")
        new.close()


def test_a_window_ends_early_once_the_changes_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    # A 30 s window, but a login after the first publication is published once 50 ms
    # pass without another change (docs/PROTOCOL.md §Extensions), well inside the
    # client's 10 s read timeout.
    monkeypatch.setattr(roster, "MAX_WINDOW", 60.0)
    with (
        quiet_server(users_window=30.0) as srv,
        RawClient(srv.address) as watcher,
        RawClient(srv.address) as late,
    ):
        delta_login(watcher, "watcher")
        watcher.expect("users_delta", joined=["watcher"], count=1)
        delta_login(late, "late")
        watcher.expect("users_delta", joined=["late"], count=2)
        assert srv.server._publisher.publications == 2


def test_takeover_changes_no_list_and_the_periodic_push_carries_the_count() -> None:
    with (
        quiet_server(users_interval=0.05) as srv,
        RawClient(srv.address) as watcher,
        RawClient(srv.address) as a,
    ):
        delta_login(watcher, "watcher")
        delta_login(a, "taken")
        with RawClient(srv.address) as b:
            delta_login(b, "taken")
            a.until("bye", reason="session_replaced")
            # The watcher's list never loses "taken": no left, and no second joined.
            users: set[str] = set()
            ticks = 0
            while ticks < 3:
                f = watcher.until("users_delta")
                users.difference_update(f.get("left", []))
                users.update(f.get("joined", []))
                assert "taken" not in f.get("left", [])
                if "joined" not in f and "left" not in f and len(users) == 2:
                    ticks += 1  # the periodic push: no changes, the count
                    assert f["count"] == 2
            assert users == {"watcher", "taken"}


def test_sdk_follows_deltas_and_hooks_see_who_came_and_went(server: TestServer) -> None:
    got: queue.Queue[UsersChanged] = queue.Queue()
    with ChatClient(server.host, server.port) as a:
        a.on_users(got.put)
        a.login("anna", PASSWORD)
        assert got.get(timeout=T) == UsersChanged(users=("anna",), joined=("anna",))
        with ChatClient(server.host, server.port) as b:
            b.login("Bert", PASSWORD)
            assert got.get(timeout=T) == UsersChanged(("anna", "Bert"), joined=("Bert",))
            assert b.users == ("anna", "Bert")
        assert got.get(timeout=T) == UsersChanged(("anna",), left=("Bert",))
        assert a.users == a.request_users() == ("anna",)


def test_sdk_heals_a_list_out_of_step() -> None:
    """A scripted peer sends a delta whose count disagrees: the SDK asks for the list."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    asked: queue.Queue[dict[str, Any]] = queue.Queue()

    def peer() -> None:
        conn, _ = listener.accept()
        with conn, conn.makefile("rwb") as f:
            login = json.loads(f.readline())
            assert login["features"] == ["users_delta"]
            ok = {"type": "login_ok", "username": "me", "new_user": False, "users": ["me"]}
            ok |= {"features": ["users_delta"], "id": login["id"]}
            f.write(json.dumps(ok).encode() + b"\n")
            f.write(b'{"type":"users_delta","joined":["x"],"count":5}\n')
            f.flush()
            asked.put(json.loads(f.readline()))
            f.write(b'{"type":"users","users":["a","b","me","x","y"]}\n')
            f.flush()
            asked.put(json.loads(f.readline()))  # the client's exit

    t = threading.Thread(target=peer, daemon=True)
    t.start()
    with (
        listener,
        ChatClient("127.0.0.1", port, timeout=T) as c,
        c.expect(UsersChanged, check=lambda e: len(e.users) == 5) as healed,
    ):
        c.login("me", PASSWORD)
        assert asked.get(timeout=T) == {"command": "users"}
        assert healed.wait().users == ("a", "b", "me", "x", "y")
    assert asked.get(timeout=T) == {"command": "exit"}
    t.join(T)


@given(st.lists(st.tuples(st.booleans(), st.sampled_from(["a", "B", "c", "D", "e", "Ab"]))))
def test_sorted_names_match_a_sorted_set(ops: list[tuple[bool, str]]) -> None:
    names = SortedNames()
    model: set[str] = set()
    for add, name in ops:
        if add:
            assert names.add(name) == (name not in model)
            model.add(name)
        else:
            assert names.discard(name) == (name in model)
            model.discard(name)
        assert names.snapshot() == tuple(sorted(model, key=str.lower))
        assert all(n in names for n in model) and len(names) == len(model)
        # login_ok's list, spliced into the cached JSON: first, middle, last, present.
        for extra in ("0", "Ac", "Zz", name):
            want = sorted(model if extra in model else model | {extra}, key=str.lower)
            assert msgspec.json.decode(names.json_with(extra)) == want
            # The same array in the slot of an encoded frame, the rest left as it was.
            frame = names.frame_with(extra, b'{"type":"x","users":[],"id":"\\"users\\":[]"}\n')
            assert frame.endswith(b"\n")
            assert msgspec.json.decode(frame) == {"type": "x", "users": want, "id": '"users":[]'}
