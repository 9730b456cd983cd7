"""The fan-out's turns (server/chatroom_server/fanturns.py) on a real server, under
attack: rooms over ``LARGE`` members flooded by several senders while members part, are
kicked and banned, are taken over by a second login, log out, reset and resume, get DMs
and lobby messages, or never read; and a server killed mid-slice. Every recipient gets
each message it may see once, in seq order, nothing after it left the room, and a
resume with ``since`` closes every gap (docs/PROTOCOL.md §Ordering, §Resume, §Rooms)."""

from __future__ import annotations

import signal
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from chatroom_server.fanturns import LARGE, Turns
from tests.helpers import PASSWORD, RawClient, ServerProcess, quiet_server
from tests.server.test_irc import Irc

pytestmark = pytest.mark.timeout(300)

# Frames that carry a message's or an event's seq: a recipient sees them in seq order.
_ORDERED = ("broadcast", "dm", "room_event")


def _login(address: tuple[str, int], name: str, **extra: Any) -> tuple[RawClient, dict[str, Any]]:
    c = RawClient(address, timeout=60)
    c.send(command="login", username=name, password=PASSWORD, features=["rooms"], **extra)
    ok = c.expect("login_ok")
    return c, ok


def _drain(c: RawClient, tag: str) -> list[dict[str, Any]]:
    """Everything sent to ``c`` so far: a ping's pong follows it."""
    c.send(command="ping", id=tag)
    got: list[dict[str, Any]] = []
    while True:
        f = c.recv()
        if f.get("type") == "pong" and f.get("id") == tag:
            return got
        got.append(f)


def _until_closed(c: RawClient) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while True:
        try:
            got.append(c.recv())
        except (EOFError, ConnectionResetError):
            return got


def _seqs(frames: list[dict[str, Any]], room: str | None = "big") -> list[int]:
    """The seqs of the room's broadcasts among ``frames`` (None: every ordered frame)."""
    return [
        f["seq"]
        for f in frames
        if f.get("type") in _ORDERED
        and "seq" in f
        and (room is None or (f.get("type") == "broadcast" and f.get("room") == room))
    ]


def _in_order(frames: list[dict[str, Any]]) -> None:
    seqs = _seqs(frames, None)
    assert seqs == sorted(set(seqs)), f"out of order or twice: {seqs}"


def _epoch(address: tuple[str, int]) -> str:
    """The database's epoch, as a login_ok gives it (docs/PROTOCOL.md §Resume)."""
    c, ok = _login(address, "probe")
    c.close()
    epoch: str = ok["epoch"]
    return epoch


def _replay(c: RawClient) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while True:
        f = c.recv()
        if f.get("type") == "replay_done":
            return got
        if f.get("type") != "replay_truncated":
            got.append(f)


class _Senders:
    """``n`` senders flooding room "big", each pipelining ``k`` messages and reading its
    acks; ``started`` is set at the first ack."""

    def __init__(
        self, clients: list[RawClient], k: int, pad: str = "", rooms: tuple[str, ...] = ("big",)
    ) -> None:
        self.clients = clients
        self.k = k
        self.pad = pad  # appended to each message
        self.rooms = rooms  # sender i's room: rooms[i % len(rooms)]
        self.acked: dict[int, list[int]] = {}  # sender index -> its acks' seqs, in order
        self.frames: dict[int, list[dict[str, Any]]] = {}
        self.started = threading.Event()
        self.failed: list[Exception] = []
        self.threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(len(clients))
        ]

    def _run(self, i: int) -> None:
        c = self.clients[i]
        acks: list[int] = []
        frames: list[dict[str, Any]] = []
        try:
            for j in range(self.k):  # in bursts of 10: a job after a job
                room = self.rooms[i % len(self.rooms)]
                c.send(command="pm", room=room, message=f"s{i} {j}{self.pad}", id=f"s{i}-{j}")
                if j % 10 < 9 and j < self.k - 1:
                    continue
                while len(acks) <= j:
                    f = c.recv()
                    frames.append(f)
                    if f.get("type") == "ack" and f.get("command") == "pm":
                        acks.append(f["seq"])
                        self.started.set()
                    elif f.get("type") == "error":
                        raise AssertionError(f"sender {i}: {f}")
        except (AssertionError, OSError, EOFError) as exc:  # reported by the test
            self.failed.append(exc)
        self.acked[i] = acks
        self.frames[i] = frames

    def __enter__(self) -> _Senders:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for t in self.threads:
            t.join(120)

    def all_acked(self) -> list[int]:
        assert not self.failed, self.failed
        assert not any(t.is_alive() for t in self.threads)
        out = sorted(s for acks in self.acked.values() for s in acks)
        for acks in self.acked.values():
            assert acks == sorted(acks) and len(acks) == self.k  # a sender's acks in order
        assert len(set(out)) == len(out)
        return out


@contextmanager
def _room(address: tuple[str, int], n: int) -> Iterator[tuple[RawClient, list[RawClient]]]:
    """An owner and ``n`` members of room "big" (so ``n + 1`` members), logged in, with
    the join events read."""
    owner, _ = _login(address, "owner")
    owner.send(command="join", room="big", id="j")
    owner.until("room_info", id="j")
    members = []
    for i in range(n):
        c, _ = _login(address, f"m{i}")
        c.send(command="join", room="big", id="j")
        c.until("room_info", id="j")
        members.append(c)
    for c in [owner, *members]:
        _drain(c, "joined")
    try:
        yield owner, members
    finally:
        for c in [owner, *members]:
            c.close()


@pytest.mark.parametrize("n", [LARGE, 3 * LARGE])
def test_a_flood_with_parts_kicks_bans_takeovers_resets_dms_and_lobby(
    n: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A room of ``n + 1`` (the smallest sent in slices, and a larger one): three members
    flood it while one parts, one is kicked, one banned, one taken over by a second
    login that resumes, one reset and resumed, one logs out, one gets DMs, one never
    reads until the end, and a v1 client talks in the lobby. Everyone who stayed gets
    every message once and in seq order; those who left get every message before their
    leaving and none after; every resume closes its gap."""
    jobs = []  # the batches sent in turns: the attack reaches the sliced path
    add = Turns.add

    def counted(self: Turns, batch: Any, out: Any) -> None:
        jobs.append(len(out))
        add(self, batch, out)

    monkeypatch.setattr(Turns, "add", counted)
    with (
        quiet_server(password_hash="load-test") as srv,
        _room(srv.address, n) as (owner, members),
    ):
        epoch = _epoch(srv.address)
        lobby = RawClient(srv.address, timeout=60)
        lobby.send(command="login", username="v1", password=PASSWORD)
        lobby.expect("login_ok")
        senders_c = members[:3]
        parted, kicked, banned, taken, reset, gone, dmed = members[3:10]
        # The last 40 also in a small room, whose messages go out between the slices.
        small = members[-40:]
        for c in small:
            c.send(command="join", room="small", id="js")
            c.until("room_info", id="js")
        # Round trips while the flood goes out in slices: a message to the small room,
        # a DM from another member of the large one, a lobby message from a v1 client.
        dm_sender = members[-41]
        side_failed: list[Exception] = []
        side_frames: dict[RawClient, list[dict[str, Any]]] = {small[-1]: [], dm_sender: []}

        def side_traffic() -> None:
            try:
                for i in range(20):
                    small[-1].send(command="pm", room="small", message=f"small {i}", id=f"s{i}")
                    dm_sender.send(command="dm", to="m9", message=f"dm {i}", id=f"d{i}")
                    lobby.send(command="pm", message=f"lobby {i}", id=f"l{i}")
                    for c, rid in ((small[-1], f"s{i}"), (dm_sender, f"d{i}"), (lobby, f"l{i}")):
                        while True:
                            f = c.recv()
                            side_frames.setdefault(c, []).append(f)
                            if f.get("type") == "ack" and f.get("id") == rid:
                                break
            except (AssertionError, OSError, EOFError) as exc:  # reported by the test
                side_failed.append(exc)

        side = threading.Thread(target=side_traffic, daemon=True)
        with _Senders(senders_c, 60) as senders:
            side.start()
            assert senders.started.wait(60)
            parted.send(command="part", room="big", id="p")
            owner.send(command="kick", room="big", user="m4", id="k")
            owner.send(command="ban", room="big", user="m5", reason="spam", id="b")
            # The second login of m6 resumes from what the first had read so far.
            first = _drain(taken, "t")
            since_taken = max(_seqs(first, None), default=0)
            taken2, _ = _login(srv.address, "m6", since=since_taken, epoch=epoch)
            # m7 reads a little, then its connection is reset.
            before_reset = _drain(reset, "r")
            reset.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            reset.close()
            # m8 logs out mid-flood.
            gone.send(command="exit")
            gone_frames = _until_closed(gone)
            resumed_from = max(_seqs(before_reset, None), default=0)
            reset2, _ = _login(srv.address, "m7", since=resumed_from, epoch=epoch)
        side.join(120)
        assert not side_failed and not side.is_alive()
        big = senders.all_acked()
        assert len(big) == 180
        assert jobs and max(jobs) >= LARGE
        owner_frames = _drain(owner, "end")
        kicked_ack = next(f for f in owner_frames if f.get("type") == "ack" and f.get("id") == "k")
        ban_ack = next(f for f in owner_frames if f.get("type") == "ack" and f.get("id") == "b")

        def check_stayed(name: str, frames: list[dict[str, Any]], own: list[int]) -> None:
            _in_order(frames)
            got = _seqs(frames)
            assert sorted(set(got) | set(own)) == big, name  # every message, once
            assert len(got) == len(set(got)), name

        # Senders: everyone else's messages (their own are acked), in order.
        for i, c in enumerate(senders_c):
            rest = senders.frames[i] + _drain(c, "end")
            check_stayed(f"m{i}", rest, senders.acked[i])
        check_stayed("owner", owner_frames, [])
        for c in members[10:]:
            frames = side_frames.get(c, []) + _drain(c, "end")
            check_stayed("member", frames, [])
            if c in small[:-1]:
                assert len(_seqs(frames, "small")) == 20

        # The one who parted: everything before its part, nothing after.
        frames = _drain(parted, "end")
        _in_order(frames)
        part_seq = next(f["seq"] for f in frames if f.get("type") == "ack" and f.get("id") == "p")
        assert _seqs(frames) == [s for s in big if s < part_seq]
        for who, c, event_seq in (
            ("m4", kicked, kicked_ack["seq"]),
            ("m5", banned, ban_ack["seq"]),
        ):
            frames = _drain(c, "end")
            _in_order(frames)
            assert _seqs(frames) == [s for s in big if s < event_seq], who

        # The taken-over session ends with session_replaced; the new one resumed.
        old = first + _until_closed(taken)
        assert old[-1] == {"type": "bye", "reason": "session_replaced"}
        _in_order(old)
        new = _replay(taken2) + _drain(taken2, "end")
        _in_order(new)
        assert _seqs(new) == [s for s in big if s > since_taken]

        # Reset and resumed: the rest, exactly.
        after_reset = _replay(reset2) + _drain(reset2, "end")
        _in_order(before_reset)
        _in_order(after_reset)
        assert _seqs(after_reset) == [s for s in big if s > resumed_from]

        # Logged out mid-flood: what it got was in order, then it resumes.
        _in_order(gone_frames)
        last = max(_seqs(gone_frames, None), default=0)
        back, _ = _login(srv.address, "m8", since=last, epoch=epoch)
        resumed = _replay(back) + _drain(back, "end")
        assert _seqs(resumed) == [s for s in big if s > last]
        assert sorted(set(_seqs(gone_frames)) | set(_seqs(resumed))) == big

        # DMs and lobby messages between the room's, in seq order for the DM's recipient.
        frames = _drain(dmed, "end")
        _in_order(frames)
        assert [f["message"] for f in frames if f.get("type") == "dm"] == [
            f"dm {i}" for i in range(20)
        ]
        assert _seqs(frames) == big
        lobby_frames = side_frames[lobby] + _drain(lobby, "end")
        _in_order(lobby_frames)
        assert not [f for f in lobby_frames if f.get("room")]


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_killed_or_stopped_mid_slice_then_everyone_resumes(
    tmp_path: Path, how: signal.Signals
) -> None:
    """Three senders flood a room of 300; the server is killed (or stopped) mid-flood.
    After a restart every member resumes with the highest seq it had: with what it got
    before, it has every acknowledged message once (and no gap in what it got)."""
    db = tmp_path / "kill.db"
    args = ("--users-interval", "0", "--rate-limit", "off", "--password-hash", "load-test")
    n = 299
    with ServerProcess(db, *args) as server, _room(server.address, n) as (owner, members):
        epoch = _epoch(server.address)
        senders = _Senders(members[:3], 200)
        with senders:
            # At the first ack: later messages' slices are still going out.
            assert senders.started.wait(60)
            server.proc.send_signal(how)
            server.proc.wait(10)
        acked: set[int] = set()
        for i in range(3):
            acked |= set(senders.acked.get(i, []))
        before = {}
        for i, c in enumerate([owner, *members]):
            frames = _until_closed(c)
            if i in (1, 2, 3):
                frames = senders.frames.get(i - 1, []) + frames
            _in_order(frames)
            before[i] = frames
    with ServerProcess(db, *args) as server:
        for i, name in enumerate(["owner"] + [f"m{j}" for j in range(n)]):
            mine = set(senders.acked.get(i - 1, [])) if i in (1, 2, 3) else set()
            since = max(_seqs(before[i], None), default=0)
            c, _ = _login(server.address, name, since=since, epoch=epoch)
            replay = _replay(c)
            c.close()
            _in_order(replay)
            got = _seqs(before[i]) + _seqs(replay)
            assert len(got) == len(set(got)), name
            assert acked - mine <= set(got), (name, sorted(acked - mine - set(got))[:5])
            assert all(s > since for s in _seqs(replay, None))


def test_an_irc_member_of_a_large_room_and_a_small_one_sees_both_in_seq_order() -> None:
    """An IRC member (its outbox renders the events it is sent, so what it is owed and
    what it is given after are joined with their events) of a room of 150 flooded by
    three senders and of a small room with round trips going on: every line once, in
    the order of the seqs the senders were acked with."""
    with (
        quiet_server(password_hash="load-test", irc_port=0) as srv,
        _room(srv.address, 148) as (_owner, members),
    ):
        irc = Irc(srv.server.irc_addresses[0])
        irc.register("ircm")
        irc.send("JOIN #big", "JOIN #small")
        irc.until("366", "#small")
        talker, _ = _login(srv.address, "talker")
        talker.send(command="join", room="small", id="j")
        talker.until("room_info", id="j")
        seq_of: dict[str, int] = {}
        side_failed: list[Exception] = []

        def round_trips() -> None:
            try:
                for i in range(30):
                    talker.send(command="pm", room="small", message=f"small {i}", id=f"t{i}")
                    seq_of[f"small {i}"] = talker.until("ack", id=f"t{i}")["seq"]
            except (AssertionError, OSError, EOFError) as exc:  # reported by the test
                side_failed.append(exc)

        side = threading.Thread(target=round_trips, daemon=True)
        with _Senders(members[:3], 60) as senders:
            side.start()
            side.join(120)
        assert not side_failed and not side.is_alive()
        senders.all_acked()
        for i, acks in senders.acked.items():
            for j, seq in enumerate(acks):
                seq_of[f"s{i} {j}"] = seq
        got: list[int] = []
        while len(got) < len(seq_of):
            line = irc.line()
            if " PRIVMSG #big :" in line or " PRIVMSG #small :" in line:
                got.append(seq_of[line.split(" :", 1)[1]])
        assert got == sorted(seq_of.values())  # each once, in seq order
        irc.send("PING :end")
        rest = []
        while not (line := irc.line()).endswith(" :end"):
            rest.append(line)
        assert not [x for x in rest if " PRIVMSG " in x]  # nothing twice


def test_a_member_that_never_reads_stalls_nobody() -> None:
    """A room of 151 flooded with messages of 2 KB by three senders while one member
    never reads (a receive buffer of 4 KiB, the server's output limit 64 KiB; whether
    it is cut as a slow reader depends on the kernel's buffers): the senders are all
    acked, everyone else gets everything once and in seq order, and what the
    never-reading one gets, once it reads, is in order too."""
    with (
        quiet_server(password_hash="load-test", max_output=64 * 1024) as srv,
        _room(srv.address, 149) as (owner, members),
    ):
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before its window
        raw.settimeout(60)
        raw.connect(srv.address)
        sleeper = RawClient(srv.address, timeout=60)
        sleeper.sock.close()
        sleeper.sock = raw
        sleeper.send(command="login", username="sleeper", password=PASSWORD, features=["rooms"])
        sleeper.expect("login_ok")
        sleeper.send(command="join", room="big", id="j")
        sleeper.until("room_info", id="j")
        for c in [owner, *members]:
            _drain(c, "slept")
        with _Senders(members[:3], 60, "x" * 2000) as senders:
            pass
        big = senders.all_acked()
        for i, c in enumerate(members[:3]):
            frames = senders.frames[i] + _drain(c, "end")
            _in_order(frames)
            assert sorted(set(_seqs(frames)) | set(senders.acked[i])) == big
        for c in [owner, *members[3:]]:
            frames = _drain(c, "end")
            _in_order(frames)
            assert _seqs(frames) == big
        slept: list[dict[str, Any]] = []
        try:  # up to a pong, or to the end of what it was sent before it was cut
            sleeper.send(command="ping", id="end")
            while (f := sleeper.recv()) != {"type": "pong", "id": "end"}:
                slept.append(f)
        except (EOFError, ConnectionResetError, BrokenPipeError):
            pass
        _in_order(slept)


def test_a_member_of_two_flooded_large_rooms_sees_both_in_seq_order() -> None:
    """Four senders flood two rooms of 131 with the same members, two each: every member
    is owed both rooms' messages at once, and gets each once, in seq order."""
    with (
        quiet_server(password_hash="load-test") as srv,
        _room(srv.address, 130) as (owner, members),
    ):
        for c in [owner, *members]:
            c.send(command="join", room="big2", id="j2")
            c.until("room_info", id="j2")
        for c in [owner, *members]:
            _drain(c, "joined")
        with _Senders(members[:4], 40, rooms=("big", "big2")) as senders:
            pass
        senders.all_acked()
        by_room = {
            room: sorted(s for i in (k, k + 2) for s in senders.acked[i])
            for k, room in enumerate(("big", "big2"))
        }
        for i, c in enumerate([owner, *members]):
            frames = (senders.frames[i - 1] if 1 <= i <= 4 else []) + _drain(c, "end")
            _in_order(frames)
            own = set(senders.acked.get(i - 1, [])) if 1 <= i <= 4 else set()
            for room, seqs in by_room.items():
                got = _seqs(frames, room)
                assert len(got) == len(set(got))
                assert sorted(set(got) | (own & set(seqs))) == seqs, (i, room)


def test_a_sender_kicked_mid_flood_has_exactly_its_acked_messages_delivered() -> None:
    """A member of a room of 150 floods it and is kicked mid-flood: each of its messages
    is either acked (and then every other member has it, before the kick) or refused
    ``not_in_room`` (and nobody has it)."""
    with (
        quiet_server(password_hash="load-test") as srv,
        _room(srv.address, 149) as (owner, members),
    ):
        flooder = members[0]
        acked: list[int] = []
        refused = 0
        seen: list[dict[str, Any]] = []  # the owner's frames up to the kick's ack
        kick_seq = 0
        for j in range(100):  # in bursts of 10, each burst's answers read before the next
            flooder.send(command="pm", room="big", message=f"f {j}", id=f"f{j}")
            if j % 10 < 9:
                continue
            answered = 0
            while answered < 10:
                f = flooder.recv()
                if f.get("type") == "ack" and f.get("command") == "pm":
                    acked.append(f["seq"])
                    answered += 1
                elif f.get("type") == "error":
                    assert f["code"] == "not_in_room", f
                    refused += 1
                    answered += 1
            if j == 9:  # the next burst races the kick; the ones after it come after it
                owner.send(command="kick", room="big", user="m0", id="k")
            elif j == 19:
                while (f := owner.recv()).get("id") != "k":
                    seen.append(f)
                kick_seq = f["seq"]
        assert len(acked) >= 10 and refused >= 80 and len(acked) + refused == 100
        assert acked == sorted(acked) and max(acked) < kick_seq
        for c in [owner, *members[1:]]:
            frames = (seen if c is owner else []) + _drain(c, "end")
            _in_order(frames)
            got = [f["seq"] for f in frames if f.get("type") == "broadcast" and f["from"] == "m0"]
            assert got == acked
