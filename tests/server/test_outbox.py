"""The outbox's writes (server/chatroom_server/outbox.py): the two passes of a
publication, the fan-out's ``offer``, and direct sends, on a real socket pair."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from chatroom_server.outbox import Flusher, Outbox


@pytest.fixture
def pair() -> Iterator[tuple[Outbox, socket.socket]]:
    a, b = socket.socketpair()
    b.settimeout(5)
    flusher = Flusher()
    flusher.start()
    yield Outbox(a, flusher, name="test"), b
    flusher.stop()
    a.close()
    b.close()


def read(sock: socket.socket, n: int) -> bytes:
    got = b""
    while len(got) < n:
        chunk = sock.recv(n - len(got))
        assert chunk, "closed early"
        got += chunk
    return got


def test_queued_frames_go_out_in_one_push_and_in_order(
    pair: tuple[Outbox, socket.socket],
) -> None:
    out, peer = pair
    assert out.queue(b"one\n") and out.queue(b"two\n")
    assert out.backlog == 8  # queued, nothing written yet
    out.push()
    assert out.backlog == 0
    out.push()  # nothing left: a no-op
    assert read(peer, 8) == b"one\ntwo\n"
    # A direct send after a queue keeps the queued bytes first.
    out.queue(b"three\n")
    assert out.send(b"four\n")
    assert read(peer, 11) == b"three\nfour\n"


def test_close_writes_what_was_queued_then_ends(pair: tuple[Outbox, socket.socket]) -> None:
    out, peer = pair
    out.queue(b"last\n")
    out.close(linger=1.0)
    assert read(peer, 5) == b"last\n"
    assert peer.recv(10) == b""


def test_close_of_a_dead_connection_drops_what_was_queued(
    pair: tuple[Outbox, socket.socket],
) -> None:
    # The reader's recv failed (a reset): the queued bytes could not arrive anyway, so
    # close() neither sends them nor shuts down first; it only closes.
    out, peer = pair
    out.queue(b"never\n")
    out.close(linger=1.0, dead=True)
    assert peer.recv(10) == b""
    assert not out.queue(b"x\n")


def test_queue_past_the_limit_drops_the_connection_at_the_push(
    pair: tuple[Outbox, socket.socket],
) -> None:
    out, _ = pair
    out.limit = 10
    dropped: list[str] = []
    out.on_drop = dropped.append
    assert out.queue(b"12345\n") and out.queue(b"678901\n")  # no lock, no check yet
    out.push()  # the limit applies as the frames move into the buffer
    assert dropped == ["output backlog over 10 bytes"]
    assert not out.queue(b"x\n") and not out.send(b"y\n")


def test_concurrent_pushes_lose_nothing_and_keep_each_senders_order(
    pair: tuple[Outbox, socket.socket],
) -> None:
    out, peer = pair
    senders, n = 8, 2000
    start = threading.Barrier(senders)

    def fan(k: int) -> None:
        start.wait(10)
        for i in range(n):
            if k % 2:
                out.offer(f"{k} {i}\n".encode())  # the fan-out's way
            else:
                out.queue(f"{k} {i}\n".encode())
                out.push()
            if i % 97 == 0:
                out.send(f"{k} {i}.\n".encode())  # a direct send mixed in (acks, DMs)

    threads = [threading.Thread(target=fan, args=(k,)) for k in range(senders)]
    for t in threads:
        t.start()
    want = senders * (n + len(range(0, n, 97)))
    lines: list[bytes] = []
    buf = b""
    while len(lines) < want:  # reading while they write: the buffers stay small
        chunk = peer.recv(65536)
        assert chunk
        buf += chunk
        *done, buf = buf.split(b"\n")
        lines += done
    for t in threads:
        t.join(10)
    seen: dict[int, list[str]] = {k: [] for k in range(senders)}
    for line in lines:
        who, seq = line.decode().split()
        seen[int(who)].append(seq)
    for k in range(senders):
        expect = []
        for i in range(n):
            expect.append(str(i))
            if i % 97 == 0:
                expect.append(f"{i}.")
        assert seen[k] == expect


def test_push_never_waits_for_the_lock_and_the_holder_sends_its_frames(
    pair: tuple[Outbox, socket.socket],
) -> None:
    out, peer = pair
    holding, release = threading.Event(), threading.Event()

    def holder() -> None:  # stands in for another sender mid-send, or the flusher
        with out._lock:
            holding.set()
            release.wait(10)
        out._unlocked()  # what every holder does after letting go

    t = threading.Thread(target=holder)
    t.start()
    assert holding.wait(10)
    out.queue(b"queued while held\n")
    out.push()  # returns at once: the lock is taken (a wait here would hang the test)
    assert out.backlog == len(b"queued while held\n")
    release.set()
    t.join(10)
    assert read(peer, 18) == b"queued while held\n"
    assert out.backlog == 0


def test_offer_never_waits_for_the_lock_and_the_holder_sends_its_frame(
    pair: tuple[Outbox, socket.socket],
) -> None:
    out, peer = pair
    holding, release = threading.Event(), threading.Event()

    def holder() -> None:
        with out._lock:
            holding.set()
            release.wait(10)
        out._unlocked()

    t = threading.Thread(target=holder)
    t.start()
    assert holding.wait(10)
    out.offer(b"offered while held\n")  # returns at once, the frame queued
    assert out.backlog == len(b"offered while held\n")
    release.set()
    t.join(10)
    assert read(peer, 19) == b"offered while held\n"
    assert out.backlog == 0


def test_offer_goes_behind_what_is_queued_and_what_the_kernel_did_not_take() -> None:
    a, b = socket.socketpair()
    b.settimeout(5)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    flusher = Flusher()
    flusher.start()
    try:
        out = Outbox(a, flusher, name="test")
        out.queue(b"first\n")
        out.offer(b"second\n")  # the queued frame goes out ahead of it
        assert read(b, 13) == b"first\nsecond\n"
        # More than the socket takes while nobody reads: the rest is the backlog, and
        # later offers append to it; the flusher writes it all, in order.
        big = b"".join(b"%06d\n" % i for i in range(100_000))
        out.offer(big)
        assert out.backlog > 0
        out.offer(b"after\n")
        assert read(b, len(big) + 6) == big + b"after\n"
    finally:
        flusher.stop()
        a.close()
        b.close()


class CountingSocket(socket.socket):
    """A socket that counts its ``send`` calls (each a syscall that gives the GIL up)."""

    sends = 0

    def send(self, data: bytes, flags: int = 0) -> int:  # type: ignore[override]
        self.sends += 1
        return super().send(data, flags)


def test_nothing_to_send_is_no_syscall_and_keeps_the_order() -> None:
    """An IRC sender's ack without echo-message renders to no line: offering or sending
    it must not cost a zero-byte ``send`` (docs/PERFORMANCE.md, "The send path"), and
    what is queued still goes out, in order."""
    a, b = socket.socketpair()
    b.settimeout(5)
    flusher = Flusher()
    flusher.start()
    try:
        sock = CountingSocket(fileno=a.detach())
        out = Outbox(sock, flusher, name="test")
        out.offer(b"")
        assert out.send(b"")
        assert sock.sends == 0
        out.queue(b"one\n")
        assert out.send(b"")  # what was queued goes out, and only that
        assert sock.sends == 1
        out.offer(b"two\n")
        out.offer(b"")
        assert sock.sends == 2
        assert read(b, 8) == b"one\ntwo\n"
    finally:
        flusher.stop()
        sock.close()
        b.close()


def test_offer_past_the_limit_drops_the_connection(pair: tuple[Outbox, socket.socket]) -> None:
    out, _ = pair
    out._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    out.limit = 1000
    dropped: list[str] = []
    out.on_drop = dropped.append
    out.offer(b"x" * 200_000)  # the kernel takes some; the rest is over the limit
    assert dropped == ["output backlog over 1000 bytes"]
    out.offer(b"later\n")  # dropped quietly: the connection is closing
    assert not out.queue(b"x\n") and not out.send(b"y\n")


def test_hold_keeps_live_frames_behind_a_replay_of_any_size() -> None:
    """docs/PROTOCOL.md §Resume: what is sent during hold() goes out after release()'s
    replay, and a replay bigger than the backlog limit is not taken for a slow reader."""
    a, b = socket.socketpair()
    b.settimeout(5)
    flusher = Flusher()
    flusher.start()
    try:
        out = Outbox(a, flusher, limit=4096, name="test")
        assert out.send(b"login_ok\n")
        out.hold()
        assert out.send(b"live 1\n")
        out.queue(b"live 2\n")
        out.push()
        out.offer(b"live 3\n")
        replay = b"".join(b"replayed %05d\n" % i for i in range(2000))  # 30 KB > 4 KiB
        assert out.release(replay)
        expected = b"login_ok\n" + replay + b"live 1\nlive 2\nlive 3\n"
        assert read(b, len(expected)) == expected
        assert out.send(b"after\n")
        assert read(b, 6) == b"after\n"
    finally:
        flusher.stop()
        a.close()
        b.close()


def test_a_goodbye_during_a_replay_goes_out_and_release_reports_it() -> None:
    a, b = socket.socketpair()
    b.settimeout(5)
    flusher = Flusher()
    flusher.start()
    try:
        out = Outbox(a, flusher, name="test")
        out.hold()
        out.send(b"held\n")
        out.finish(b"bye\n")  # e.g. the session was taken over meanwhile
        assert not out.release(b"replay\n")
        assert read(b, 4) == b"bye\n"
    finally:
        flusher.stop()
        a.close()
        b.close()
