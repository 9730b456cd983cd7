"""Rooms on a real server (docs/PROTOCOL.md §Rooms): raw sockets, a temp database. A v1
client sees exactly what it did; v2 clients join, talk in rooms, read what they may,
resume across rooms, and keep their rooms across a restart."""

from __future__ import annotations

import json
import queue
import signal
from pathlib import Path
from typing import Any

import pytest

from chatroom import Broadcast, ChatClient
from chatroom.testing import ServerProcess, TestServer
from chatroom_server.messagelog import StorageError
from tests.helpers import PASSWORD, RawClient, connect, quiet_server


def v2(srv: TestServer, name: str, **extra: Any) -> tuple[RawClient, dict[str, Any]]:
    """A rooms client, logged in; its login_ok (the joined push consumed)."""
    c = RawClient(srv.address)
    c.send(command="login", username=name, password=PASSWORD, features=["rooms"], **extra)
    ok = c.expect("login_ok")
    return c, ok


def settle(c: RawClient) -> None:
    """Everything sent to ``c`` so far has arrived: a ping's pong follows it."""
    c.send(command="ping", id="settle")
    c.until("pong", id="settle")


def test_rooms_end_to_end_and_a_v1_client_sees_nothing_of_them() -> None:
    with quiet_server() as srv:
        carol = connect(srv.address, "carol")  # protocol v1
        alice, ok = v2(srv, "alice")
        assert (ok["version"], ok["features"], ok.get("rooms", [])) == (2, ["rooms"], [])
        alice.until("users", joined="alice")
        bob, _ = v2(srv, "bob")
        bob.until("users", joined="bob")

        alice.send(command="join", room="Dev", id=1)
        joined = alice.until("room_info", id=1)
        assert joined["info"]["roles"] == {"alice": "owner"} and joined["seq"] > 0
        bob.send(command="join", room="dev", id=2)
        info = bob.until("room_info", id=2)["info"]
        assert info["members"] == ["alice", "bob"] and info["name"] == "Dev"
        ev = alice.until("room_event")
        assert (ev["event"], ev["by"], ev["room"]) == ("join", "bob", "Dev")

        alice.send(command="pm", room="dev", message="in dev", id=3)
        ack = alice.until("ack", id=3)
        assert ack["room"] == "Dev"
        got = bob.until("broadcast")
        assert (got["message"], got["room"], got["seq"]) == ("in dev", "Dev", ack["seq"])

        # lobby: everyone, as before (carol's frames carry no room).
        alice.send(command="pm", message="in lobby", id=4)
        lobby = carol.until("broadcast")
        assert lobby["message"] == "in lobby" and "room" not in lobby
        settle(carol)  # and nothing of dev reached carol before it or after
        carol.send(command="join", room="dev", id=5)
        carol.expect_error("unknown_command", id=5)

        # History: members from their join; others not at all.
        alice.send(command="history", room="dev", id=6)
        page = alice.until("history", id=6)
        assert page["room"] == "Dev" and [m["message"] for m in page["messages"]] == ["in dev"]
        assert page["messages"][0]["room"] == "Dev"
        dave, _ = v2(srv, "dave")
        dave.send(command="history", room="dev", id=7)
        assert dave.until("error", id=7)["code"] == "not_in_room"
        dave.send(command="pm", room="dev", message="let me in", id=8)
        assert dave.until("error", id=8)["code"] == "not_in_room"
        dave.send(command="rooms", id=9)
        listing = dave.until("rooms", id=9)["rooms"]
        assert listing == [{"name": "Dev", "count": 2, "modes": "+nt"}]

        # Errors a room command answers.
        alice.send(command="mode", room="dev", modes="+k", args=["s3cr3t"], id=10)
        assert alice.until("ack", id=10)["command"] == "mode"
        dave.send(command="join", room="dev", id=11)
        assert dave.until("error", id=11)["code"] == "bad_key"
        bob.send(command="topic", room="dev", topic="mine", id=12)
        assert bob.until("error", id=12)["code"] == "not_operator"
        carol.send(command="history", room="dev", id=13)  # v1: the room field is ignored
        assert [m["message"] for m in carol.until("history", id=13)["messages"]] == ["in lobby"]


def test_resume_across_rooms_and_membership_across_a_restart() -> None:
    with quiet_server() as srv:
        alice, _ = v2(srv, "alice")
        bob, _ = v2(srv, "bob")
        alice.send(command="join", room="dev", id=1)
        alice.until("room_info", id=1)
        bob.send(command="join", room="dev", id=2)
        seen = bob.until("room_info", id=2)["seq"]
        bob.send(command="exit")
        bob.wait_closed()

        alice.send(command="pm", room="dev", message="while away", id=3)
        alice.until("ack", id=3)
        alice.send(command="topic", room="dev", topic="release", id=4)
        alice.until("ack", id=4)
        alice.send(command="pm", message="lobby too", id=5)
        alice.until("ack", id=5)

        srv.restart()  # memberships are stored
        bob, ok = v2(srv, "bob", since=seen, epoch=None)
        assert [r["name"] for r in ok["rooms"]] == ["dev"] and ok["replay"]
        replayed = []
        while True:
            f = bob.recv()
            if f["type"] == "replay_done":
                break
            replayed.append(f)
        assert [
            (f["type"], f.get("room"), f.get("message") or f.get("event")) for f in replayed
        ] == [
            ("broadcast", "dev", "while away"),
            ("room_event", "dev", "topic"),
            ("broadcast", None, "lobby too"),
        ]
        assert all(f["replay"] for f in replayed)
        # A v1 login of another member: lobby only.
        carol = RawClient(srv.address)
        carol.send(command="login", username="alice", password=PASSWORD, since=0)
        carol.expect("login_ok")
        v1 = []
        while True:
            f = carol.recv()
            if f["type"] == "replay_done":
                break
            v1.append(f)
        assert [f.get("message") for f in v1] == ["lobby too"]


def test_room_limits_and_lobby() -> None:
    with quiet_server(max_rooms_per_user=1, max_rooms=2) as srv:
        alice, _ = v2(srv, "alice")
        alice.send(command="join", room="a", id=1)
        alice.until("room_info", id=1)
        alice.send(command="join", room="b", id=2)
        assert alice.until("error", id=2)["code"] == "too_many_rooms"
        alice.send(command="join", room="lobby", id=3)  # everyone is in it: no change
        assert alice.until("room_info", id=3)["info"]["name"] == "lobby"
        alice.send(command="part", room="lobby", id=4)
        assert alice.until("error", id=4)["code"] == "bad_request"
        alice.send(command="join", room="no good", id=5)
        assert alice.until("error", id=5)["code"] == "invalid_room"
        bob, _ = v2(srv, "bob")
        bob.send(command="join", room="c", id=6)
        bob.until("room_info", id=6)
        carol, _ = v2(srv, "carol")
        carol.send(command="join", room="d", id=7)
        assert carol.until("error", id=7)["code"] == "too_many_rooms"  # 2 rooms on the server


def test_room_and_lobby_messages_of_one_read_share_a_pass_in_seq_order() -> None:
    """Room messages join their reader's batch (chatroom_server.fanout, "rooms"): one
    write mixing lobby, two rooms (one spelled in another case) and a room its sender is
    not in gives the acks in order with rising seqs, the refusal in its place, and every
    member each message of its rooms in seq order, nothing of the others'."""
    with quiet_server() as srv:
        carol = connect(srv.address, "carol")  # protocol v1: lobby only
        alice, _ = v2(srv, "alice")
        bob, _ = v2(srv, "bob")
        dave, _ = v2(srv, "dave")
        for who, room, rid in ((alice, "Dev", 1), (bob, "dev", 2), (alice, "ops", 3)):
            who.send(command="join", room=room, id=rid)
            who.until("room_info", id=rid)
        dave.send(command="join", room="secret", id=4)
        dave.until("room_info", id=4)
        for c in (alice, bob, dave):
            settle(c)
        frames = [
            {"command": "pm", "message": "lobby 1", "id": 10},
            {"command": "pm", "room": "DEV", "message": "dev 1", "id": 11},
            {"command": "pm", "room": "secret", "message": "not mine", "id": 12},
            {"command": "pm", "room": "ops", "message": "ops 1", "id": 13},
            {"command": "pm", "room": "dev", "message": "dev 2", "id": 14},
            {"command": "pm", "message": "lobby 2", "id": 15},
        ]
        alice.send_raw(b"".join(json.dumps(f).encode() + b"\n" for f in frames))
        answers = [alice.until("ack" if i != 12 else "error", id=i) for i in range(10, 16)]
        assert answers[2]["code"] == "not_in_room"
        acks = [a for a in answers if a["type"] == "ack"]
        seqs = [a["seq"] for a in acks]
        assert seqs == sorted(seqs) and len(set(seqs)) == 5
        assert [a.get("room") for a in acks] == [None, "Dev", "ops", "Dev", None]

        def heard(c: RawClient) -> list[tuple[str, str | None, int]]:
            c.send(command="ping", id="after")
            got = []
            while (f := c.recv())["type"] != "pong":
                if f["type"] == "broadcast":
                    got.append((f["message"], f.get("room"), f["seq"]))
            return got

        by_seq = dict(zip(["lobby 1", "dev 1", "ops 1", "dev 2", "lobby 2"], seqs, strict=True))
        want_bob = [("lobby 1", None), ("dev 1", "Dev"), ("dev 2", "Dev"), ("lobby 2", None)]
        assert heard(bob) == [(m, r, by_seq[m]) for m, r in want_bob]
        lobby = [("lobby 1", None, by_seq["lobby 1"]), ("lobby 2", None, by_seq["lobby 2"])]
        assert heard(dave) == lobby
        assert heard(alice) == []  # never its own
        assert heard(carol) == lobby
        # And the log has them as sent: dev's history, in the canonical spelling.
        bob.send(command="history", room="dev", id=20)
        page = bob.until("history", id=20)
        assert [(m["message"], m["room"]) for m in page["messages"]] == [
            ("dev 1", "Dev"),
            ("dev 2", "Dev"),
        ]


def test_a_room_message_that_cannot_be_stored_is_unavailable_and_sent_to_nobody(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with quiet_server() as srv:
        alice, _ = v2(srv, "alice")
        bob, _ = v2(srv, "bob")
        for who, rid in ((alice, 1), (bob, 2)):
            who.send(command="join", room="dev", id=rid)
            who.until("room_info", id=rid)
        settle(alice)
        mlog = srv.server._log
        assert mlog is not None
        real = mlog.append

        def disk_full(*_: Any) -> Any:
            raise StorageError("database or disk is full")

        monkeypatch.setattr(mlog, "append", disk_full)
        lost = {"command": "pm", "room": "dev", "message": "lost", "id": 3}
        nope = {"command": "pm", "room": "nowhere", "message": "nope", "id": 4}
        alice.send_raw(b"".join(json.dumps(f).encode() + b"\n" for f in (lost, nope)))
        alice.expect_error("unavailable", id=3)
        alice.expect_error("no_such_room", id=4)
        monkeypatch.setattr(mlog, "append", real)  # the disk has room again
        alice.send(command="pm", room="dev", message="back", id=5)
        back = alice.until("ack", id=5)
        got = bob.until("broadcast")
        assert (got["message"], got["seq"]) == ("back", back["seq"])


def test_without_the_message_log_there_are_no_rooms() -> None:
    with quiet_server(history=False) as srv:
        alice, ok = v2(srv, "alice")
        assert ok["version"] == 1 and "rooms" not in ok.get("features", [])
        alice.send(command="join", room="dev", id=1)
        assert alice.until("error", id=1)["code"] == "unknown_command"


def test_resume_across_rooms_after_sigkill_has_no_gap_and_no_duplicate(tmp_path: Path) -> None:
    """One cursor for every room: a client that lived through a SIGKILL of the server
    gets every message of lobby and of its two rooms once, in seq order."""
    db = tmp_path / "chat.db"
    args = ("--users-interval", "0", "--rate-limit", "off", "--password-hash", "load-test")
    heard: queue.Queue[Broadcast] = queue.Queue()
    with ServerProcess(db, *args) as first:
        port = first.port
        alice = ChatClient("127.0.0.1", port, rooms=True, reconnect=True, reconnect_max_delay=0.2)
        alice.on_broadcast(heard.put)
        alice.connect()
        alice.login("alice", PASSWORD)
        alice.join("dev")
        alice.join("ops")
        bob = RawClient(first.address)
        bob.send(command="login", username="bob", password=PASSWORD, features=["rooms"])
        bob.until("login_ok")
        for i, room in enumerate(("dev", "ops")):
            bob.send(command="join", room=room, id=f"j{i}")
            bob.until("room_info", id=f"j{i}")

        def say(c: RawClient, n: int) -> None:
            room = (None, "dev", "ops")[n % 3]
            c.send(command="pm", message=f"m{n}", id=n, **({"room": room} if room else {}))
            c.until("ack", id=n)

        for n in range(15):
            say(bob, n)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
    with ServerProcess(db, *args, "--port", str(port)):
        bob = RawClient(("127.0.0.1", port))
        bob.send(command="login", username="bob", password=PASSWORD, features=["rooms"])
        bob.until("login_ok")
        for n in range(15, 30):
            say(bob, n)
        got = [heard.get(timeout=10) for _ in range(30)]
        alice.close()
    assert [b.message for b in got] == [f"m{n}" for n in range(30)]  # once each, in order
    assert [b.room for b in got] == [(None, "dev", "ops")[n % 3] for n in range(30)]
    seqs = [b.seq or 0 for b in got]
    assert seqs == sorted(seqs) and len(set(seqs)) == 30
    assert heard.empty()
