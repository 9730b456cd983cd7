"""Arrival storms (chatroom_server.admission, docs/PERFORMANCE.md "Arrival storms"): a
bounded number of logins at once, the rest in line; a client that says nothing holds no
slot and no thread; nobody is refused or lost, and a stop closes those still waiting."""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from queue import Queue
from typing import Any, cast

import pytest

from chatroom.testing import running_server
from chatroom_server import listeners
from chatroom_server.admission import ACCEPT_EVERY, BATCH, Admission
from chatroom_server.listeners import ADMIT_RUN, Listeners
from tests.helpers import PASSWORD, RawClient, quiet_server


class Gate:
    """An Admission over plain names, recording what it starts and gives back."""

    def __init__(self, slots: int) -> None:
        self.started: Queue[str] = Queue()
        self.never: list[str] = []
        self.queued: list[str] = []
        self.admission: Admission[str] = Admission(
            slots, self.started.put, self.never.append, lambda _: -1, self.queued.append
        )

    def drain(self) -> list[str]:
        got = []
        while not self.started.empty():
            got.append(self.started.get_nowait())
        return got


def test_arrivals_beyond_the_slots_wait_in_line_and_start_as_slots_free() -> None:
    g = Gate(2)
    for name in ("a", "b", "c", "d"):
        g.admission.arrive(name)
    assert g.drain() == ["a", "b"]
    assert g.queued == ["c", "d"] and g.admission.waiting == 2
    g.admission.leave()  # a's login is done: its slot starts c
    assert g.drain() == ["c"]
    g.admission.leave()
    g.admission.leave()
    assert g.drain() == ["d"]
    g.admission.leave()  # nobody waits: the slots are free again
    g.admission.arrive("e")
    g.admission.arrive("f")
    assert g.drain() == ["e", "f"] and g.admission.waited == 2


def test_held_connections_handed_back_in_batches_all_continue_once_in_order() -> None:
    names = [f"c{i}" for i in range(3 * BATCH + 5)]
    fds = {name: i + 1000 for i, name in enumerate(names)}
    admission: Admission[str] = Admission(
        4, lambda _: None, lambda _: None, lambda name: fds.get(name, -1), lambda _: None
    )
    admission.open()
    continued: Queue[str] = Queue()
    for name in names:
        admission.hold(name)
    run = threading.Thread(target=admission.run)
    run.start()
    try:

        def commit() -> None:  # the store thread that hands them all back at once
            for name in names:
                admission.later(name, continued.put)
            admission.later("never held", continued.put)  # not held: nothing runs

        committer = threading.Thread(target=commit)
        committer.start()
        committer.join(10)
        assert [continued.get(timeout=10) for _ in names] == names
        admission.later(names[0], continued.put)  # handed back already: not again
        fds["last"] = 1
        admission.hold("last")
        admission.later("last", continued.put)
        assert continued.get(timeout=10) == "last"
        assert continued.empty()
    finally:
        admission.close()
        run.join(10)
        admission.release_resources()


def test_a_running_thread_waits_for_a_slot_and_then_holds_it() -> None:
    g = Gate(1)
    g.admission.arrive("holder")
    assert g.drain() == ["holder"]
    entered: Queue[bool] = Queue()
    waiter = threading.Thread(target=lambda: entered.put(g.admission.enter(10.0)))
    waiter.start()
    g.admission.leave()  # the holder is done: the waiter gets its slot, in line or not
    assert entered.get(timeout=10) is True
    waiter.join(10)
    g.admission.arrive("later")
    assert g.drain() == []  # "later" waits for the waiter's slot
    g.admission.leave()
    assert g.drain() == ["later"]


def test_a_wait_in_line_that_times_out_leaves_the_line() -> None:
    g = Gate(1)
    g.admission.arrive("holder")
    assert g.admission.enter(0.01) is False
    assert g.admission.waiting == 0
    g.admission.leave()
    assert g.admission.enter(0.01) is True  # the freed slot


def test_closing_wakes_the_waiters_and_gives_back_those_never_started() -> None:
    g = Gate(1)
    g.admission.arrive("holder")
    entered: Queue[bool] = Queue()
    waiter = threading.Thread(target=lambda: entered.put(g.admission.enter(10.0)))
    waiter.start()
    g.admission.arrive("never1")
    g.admission.arrive("never2")
    g.admission.close()  # the waiter wakes, or finds it closed: either way no slot
    assert entered.get(timeout=10) is False
    waiter.join(10)
    assert sorted(g.never) == ["never1", "never2"]
    g.admission.arrive("after")  # closed: given back at once, never started
    assert g.never[-1] == "after" and g.drain() == ["holder"]
    assert g.admission.enter(1.0) is False


def test_no_slots_means_no_limit() -> None:
    g = Gate(0)
    for name in ("a", "b", "c"):
        g.admission.arrive(name)
    assert g.drain() == ["a", "b", "c"]
    assert g.admission.enter(1.0) is False  # nothing to hold, nothing to leave
    g.admission.leave()


def test_the_listener_is_looked_at_every_few_connections_while_busy() -> None:
    # A storm's connects arrive faster than its logins run: the accepts must come
    # between every few logins, not after a batch of 64 (the listen queue overflowed
    # meanwhile, and each overflow is a client retrying 1 s later).
    seen: Queue[str] = Queue()
    done = threading.Event()
    ready = 3 * BATCH
    with ExitStack() as stack:
        pairs = [stack.enter_context(_pair()) for _ in range(ready)]
        names = {ours.fileno(): f"c{i}" for i, (ours, _) in enumerate(pairs)}

        firsts = itertools.count(1)

        def first(sock: socket.socket) -> bool:
            seen.put(names[sock.fileno()])
            if next(firsts) == ready:
                done.set()
            return True  # taken: handled here, never in line

        adm: Admission[socket.socket] = Admission(
            1, _unused, _unused, lambda s: s.fileno(), _unused, first=first
        )
        adm.open()
        listen_r, listen_w = os.pipe()
        stack.callback(os.close, listen_r)
        stack.callback(os.close, listen_w)
        os.write(listen_w, b"x")  # always "a connection waiting", level-triggered
        adm.listen(listen_r, lambda: seen.put("accept"))
        for ours, theirs in pairs:
            theirs.sendall(b"hello\n")
            adm.watch(ours)
        runner = threading.Thread(target=adm.run)
        runner.start()
        try:
            assert done.wait(30)
        finally:
            adm.close()
            runner.join(10)
            adm.release_resources()
    order = [seen.get_nowait() for _ in range(seen.qsize())]
    assert sorted(x for x in order if x != "accept") == sorted(names.values())
    runs = "".join("a" if x == "accept" else "c" for x in order).split("a")
    assert max(len(run) for run in runs) <= ACCEPT_EVERY, runs


def test_a_storm_leaves_the_kernels_queue_before_its_connections_are_admitted() -> None:
    # An accept is some 7 µs, an admission 20-30 µs more: the kernel's queue (whose
    # overflow makes a client retry its SYN 1 s later) is emptied first, and again
    # between every few admissions, while connects keep coming.
    kernel = [f"c{i}" for i in range(100)]  # waiting to be accepted
    arrivals = iter(f"late{i}" for i in range(50))
    trace: list[str] = []

    class Fake:
        def _accept_one(self, listener: object) -> tuple[str, str, str] | None:
            if not kernel:
                trace.append("empty")
                return None
            trace.append("accept")
            return kernel.pop(0), "127.0.0.1", "127.0.0.1:1"

        def _admit(self, sock: str, ip: str, addr: str) -> None:
            trace.append(f"admit {sock}")
            kernel.extend(itertools.islice(arrivals, 1))  # another connect meanwhile

    Listeners._accept_some(cast(Any, Fake()), cast(Any, None))
    admitted = [t.split()[1] for t in trace if t.startswith("admit")]
    assert admitted == [f"c{i}" for i in range(100)] + [f"late{i}" for i in range(50)]
    assert trace.index("empty") < trace.index("admit c0")  # all 100 out of the queue first
    looks = "".join("|" if t == "empty" else "a" if t.startswith("admit") else "" for t in trace)
    assert max(len(run) for run in looks.split("|")) <= ADMIT_RUN, looks


def test_the_listen_queue_is_emptied_until_a_batch_has_been_admitted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A batch counts admissions, not accepts: connects that come while the first batch
    # is admitted leave the kernel's queue between runs, not after the whole batch.
    monkeypatch.setattr(listeners, "ACCEPT_BATCH", 2 * ADMIT_RUN)
    kernel = [f"c{i}" for i in range(2 * ADMIT_RUN)]
    arrivals = iter(f"late{i}" for i in range(10 * ADMIT_RUN))
    trace: list[str] = []

    class Fake:
        def _accept_one(self, listener: object) -> tuple[str, str, str] | None:
            if not kernel:
                return None
            trace.append("accept")
            return kernel.pop(0), "127.0.0.1", "127.0.0.1:1"

        def _admit(self, sock: str, ip: str, addr: str) -> None:
            trace.append("admit")
            kernel.extend(itertools.islice(arrivals, 1))

    Listeners._accept_some(cast(Any, Fake()), cast(Any, None))
    first_admit = trace.index("admit")
    assert trace[first_admit : first_admit + ADMIT_RUN + 1] == ["admit"] * ADMIT_RUN + ["accept"]
    assert trace.count("admit") == trace.count("accept")  # nothing accepted is left out


@contextlib.contextmanager
def _pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        yield ours, theirs


def _unused(conn: object) -> None:
    raise AssertionError(f"not expected here: {conn!r}")


@pytest.fixture
def one_slot() -> Iterator[Any]:
    with quiet_server(login_slots=1, password_hash="load-test") as srv:
        yield srv


def test_clients_that_say_nothing_hold_no_slot_and_no_thread(one_slot: Any) -> None:
    srv = one_slot
    watched = srv.server._admission._watched  # waiting for their client, no thread yet
    with ExitStack() as stack, RawClient(srv.address) as speaker:
        silent = [stack.enter_context(socket.create_connection(srv.address)) for _ in range(5)]
        # Accepted in order: once this login is through, so are the five before it,
        # and none took the one slot or a thread.
        assert speaker.login("speaker")["type"] == "login_ok"
        assert {c.sock.getpeername() for c in watched.values()} == {s.getsockname() for s in silent}
        silent[0].sendall(b'{"command":"ping"}\n')
        silent[0].settimeout(10)
        assert b'"pong"' in silent[0].makefile("rb").readline()
        assert len(watched) == 4


def test_a_storm_of_registrations_and_returns_all_get_in_through_one_slot() -> None:
    # The OWASP hash: with load-test hashes these logins would run on the admission
    # thread, which takes no slot (test_early_login.py, test_early_registration.py).
    with quiet_server(login_slots=1) as srv:
        storm_through_one_slot(srv)


def storm_through_one_slot(srv: Any) -> None:
    names = [f"storm{i:03d}" for i in range(60)]
    for _ in range(2):  # first-time registrations, then everyone back
        with ExitStack() as stack:
            socks = [stack.enter_context(socket.create_connection(srv.address)) for _ in names]
            for s, name in zip(socks, names, strict=True):
                login = (
                    b'{"command":"login","username":"%s","password":"%s",'
                    b'"features":["users_delta"]}\n' % (name.encode(), PASSWORD.encode())
                )
                s.sendall(login)
            for s, name in zip(socks, names, strict=True):
                s.settimeout(30)
                line = s.makefile("rb").readline()
                assert line.startswith(b'{"type":"login_ok"'), line[:200]
                assert b'"username":"%s"' % name.encode() in line
    assert srv.server._admission.waited > 0
    store = srv.server._store
    assert store is not None and store.count() == len(names)


def test_a_stop_closes_the_connections_still_waiting(tmp_path: Any) -> None:
    with ExitStack() as stack:
        srv = stack.enter_context(running_server(tmp_path / "db", login_slots=1, users_interval=0))
        silent = [stack.enter_context(socket.create_connection(srv.address)) for _ in range(3)]
        witness = stack.enter_context(RawClient(srv.address))
        witness.send(command="ping")
        witness.expect("pong")  # accepted after the three: they are waiting
        srv.stop()
        for s in silent:
            s.settimeout(10)
            got = s.makefile("rb").read()  # everything until the server closes
            assert got == b'{"type":"bye","reason":"server_shutdown"}\n'


def test_a_client_that_says_nothing_is_still_closed_at_the_login_timeout() -> None:
    now = [1000.0]
    with (
        quiet_server(login_slots=1, clock=lambda: now[0], housekeeping_interval=3600) as srv,
        socket.create_connection(srv.address) as silent,
        RawClient(srv.address) as member,
    ):
        member.login("member")  # accepted after the silent one: it is waiting
        now[0] += 31.0
        assert srv.server.sweep() == 1
        silent.settimeout(10)
        assert silent.makefile("rb").read() == b'{"type":"bye","reason":"timeout"}\n'


@pytest.mark.parametrize("send_buffer", [None, 32768])
def test_every_connection_gets_the_socket_options_whether_set_on_it_or_inherited(
    send_buffer: int | None,
) -> None:
    # Set once on the listener on Linux (listeners.INHERITS_OPTIONS), per connection
    # elsewhere: either way every accepted socket has them.
    with quiet_server(send_buffer=send_buffer) as srv, RawClient(srv.address) as client:
        assert client.login("opts")["type"] == "login_ok"
        (conn,) = [c for c in srv.server._presence.connections() if c.username == "opts"]
        assert conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        if send_buffer is not None:
            # Linux doubles what it is given, for its bookkeeping (socket(7)).
            assert conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= send_buffer
