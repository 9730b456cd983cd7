"""chat-load against real servers: honest counts, loss detection, coordinated omission."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatroom import ChatClient, Disconnect
from chatroom.testing import TestServer
from chatroom_bots.load import LoadConfig, merge_histograms, new_histogram, percentiles, run_load
from chatroom_bots.load.__main__ import build_parser
from chatroom_bots.load.__main__ import main as chat_load
from chatroom_bots.load.churn import rejoin_cpu
from chatroom_bots.load.pool import BotPool
from chatroom_bots.load.recorder import Delivery, Recorder
from chatroom_bots.load.report import write_html
from chatroom_bots.load.result import LoadResult
from chatroom_bots.load.stats import MAX_US, make_names, pack, record_counts, unpack
from tests.helpers import ServerProcess, quiet_server


def small(srv_port: int, **kw: Any) -> LoadConfig:
    base: dict[str, Any] = dict(
        port=srv_port, clients=8, senders=2, rate=100.0, duration=1.0, processes=2, drain=1.0
    )
    base.update(kw)
    return LoadConfig(**base)


@pytest.fixture
def fast_server() -> Any:
    with quiet_server() as srv:
        yield srv


def test_zero_loss_against_a_real_server(fast_server: TestServer) -> None:
    # The server runs in this process: --server-pid is this pid.
    result = run_load(small(fast_server.port, pm_fraction=0.8, server_pid=os.getpid()))
    assert result.logged_in == 8 and not result.login_failures
    assert result.sent >= 90 and result.sent_dm > 0
    assert result.expected == result.sent_pm * 7 + result.sent_dm
    assert result.delivered == result.expected
    assert (result.lost, result.duplicates, result.out_of_order, result.errors) == (0, 0, 0, 0)
    assert result.ok
    assert 0 < result.latency_ms["p50"] <= result.latency_ms["p99"] <= result.latency_ms["max"]
    assert result.timeline and "sent" in result.timeline[0]
    # Loss over time: what was expected and not yet seen drains to nothing.
    assert sum(r["expected"] for r in result.timeline) == result.expected
    assert result.timeline[-1]["outstanding"] == 0
    # The server's side, from /proc: CPU over the step, RSS, per second too.
    assert result.server_cpu_seconds is not None and result.server_cpu_seconds > 0
    assert result.server_rss_mib is not None and result.server_rss_mib > 10
    assert any("server_cpu" in r and r["server_rss_mib"] > 10 for r in result.timeline)
    assert "µs per delivery" in result.table()
    # And the generator's, beside it: the step's CPU of its worker processes.
    assert 0 < result.generator_cpu_seconds < 2 * (1.0 + 1.0 + 5)
    assert "generator     CPU" in result.table()


def test_churn_loses_and_duplicates_nothing(fast_server: TestServer) -> None:
    """Receivers cut abruptly and resumed while traffic flows: every delivery, live or
    replayed, is counted against what each bot should have received over the run."""
    cfg = small(fast_server.port, clients=20, senders=4, rate=400.0, duration=2.0, churn=10.0)
    cfg.pm_fraction = 0.8
    result = run_load(cfg)
    assert result.logged_in == 20 and result.sent_dm > 0
    assert result.resumes >= 10  # about 20 cuts in 2 s, each one caught up
    assert result.replayed > 0  # what they missed came back replayed
    assert result.delivered == result.expected
    assert (result.lost, result.duplicates, result.out_of_order, result.errors) == (0, 0, 0, 0)
    assert result.ok and 0 < result.resume_ms["p50"] <= result.resume_ms["p99"]
    assert "cuts resumed" in result.table()


def test_a_lossy_server_is_reported_with_the_right_count(
    fast_server: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    handlers = fast_server.server._handlers  # chatroom_server.handlers
    real = handlers._public
    count = [0]

    def drop_every_tenth(conn: Any, cmd: Any) -> None:
        count[0] += 1
        if count[0] % 10 == 0:
            conn.outbox.send(b'{"type":"ack","command":"pm"}\n')  # acked, never delivered
            return
        real(conn, cmd)

    monkeypatch.setattr(handlers, "_public", drop_every_tenth)
    result = run_load(small(fast_server.port, pm_fraction=1.0))
    dropped = result.sent_pm // 10
    assert dropped >= 9
    assert result.lost == dropped * 7  # each dropped broadcast had 7 recipients
    assert not result.ok
    # The report's loss, by the second each message was sent, adds up to the run's.
    lost = [r["lost"] for r in result.timeline if r["lost"] is not None]
    assert sum(lost) == result.lost and lost[0] > 0
    # The command line says so with its exit status too.
    assert (
        chat_load(
            [
                "run",
                "--port",
                str(fast_server.port),
                "--clients",
                "4",
                "--senders",
                "1",
                "--rate",
                "50",
                "--duration",
                "1",
                "--processes",
                "1",
                "--drain",
                "1",
            ]
        )
        == 1
    )


def test_login_storm_mode(fast_server: TestServer) -> None:
    result = run_load(small(fast_server.port, mode="logins", clients=12))
    assert result.logged_in == 12 and result.ok
    assert result.login_seconds > 0 and result.login_ms["p99"] > 0


def test_hold_mode_keeps_everyone_connected(fast_server: TestServer) -> None:
    result = run_load(
        small(
            fast_server.port,
            mode="hold",
            clients=10,
            duration=0.5,
            probe_rate=20.0,
            probe_seconds=1.0,
        )
    )
    assert result.logged_in == 10 and result.disconnects == 0
    assert result.sent > 0 and result.lost == 0 and result.ok


def test_latency_counts_from_the_intended_time_when_the_server_pauses(
    tmp_path: Path,
) -> None:
    with ServerProcess(tmp_path / "p.db", "--rate-limit", "off", "--users-interval", "0") as srv:
        paused = threading.Event()

        def pause_once(row: dict[str, Any]) -> None:
            if not paused.is_set():  # one second into sending: freeze the server 0.6 s
                paused.set()
                srv.proc.send_signal(signal.SIGSTOP)
                threading.Timer(0.6, srv.proc.send_signal, (signal.SIGCONT,)).start()

        try:
            result = run_load(small(srv.port, duration=3.0, rate=100.0), progress=pause_once)
        finally:
            srv.proc.send_signal(signal.SIGCONT)
        assert paused.is_set()
        # Messages due during the pause waited for it; from their intended send time.
        assert result.latency_ms["max"] >= 400
        assert result.lost == 0


def test_percentiles_merge_across_processes() -> None:
    a, b, whole = new_histogram(), new_histogram(), new_histogram()
    for v in range(1, 5001):
        (a if v % 3 else b).record_value(v * 10)
        whole.record_value(v * 10)
    merged = merge_histograms([a.encode(), b.encode()])
    assert merged.get_total_count() == 5000
    assert percentiles(merged) == percentiles(whole)
    assert percentiles(merged)["p50"] == pytest.approx(25.0, rel=0.01)  # ms


def test_names_and_payloads() -> None:
    names = make_names(300, seed=7)
    assert names == make_names(300, seed=7)
    assert len({n.lower() for n in names}) == 300
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}", n) for n in names)
    text = pack(12, 345, 6789, 80)
    assert len(text) == 80 and unpack(text) == (12, 345, 6789)
    assert unpack("hello") is None


def test_one_swarm_many_steps(fast_server: TestServer) -> None:
    from chatroom_bots.load import Swarm

    with Swarm(small(fast_server.port)) as swarm:
        assert swarm.login.logged_in == 8
        first = swarm.step(50.0, 0.5)
        second = swarm.step(100.0, 0.5)
    for r in (first, second):
        assert r.sent > 0 and r.lost == 0 and r.out_of_order == 0 and r.ok
    assert second.sent > first.sent  # twice the rate for the same time


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux's scheduling policies")
@pytest.mark.parametrize(("sched", "policy"), [("batch", "SCHED_BATCH"), ("normal", "SCHED_OTHER")])
def test_workers_run_under_the_chosen_policy(
    fast_server: TestServer, sched: Literal["batch", "normal"], policy: str
) -> None:
    """The workers yield to the server on wake-ups by default (--sched batch), every
    thread of theirs, while this process (the parent) is left as it was."""
    from chatroom_bots.load import Swarm

    before = os.sched_getscheduler(0)
    with Swarm(small(fast_server.port, sched=sched)) as swarm:
        assert swarm.login.logged_in == 8
        # After a step every thread of a worker has run: the control thread took the
        # "go", the tick thread reported, the bot loop sent (they start at different
        # times, so before it some may not exist yet).
        assert swarm.step(50.0, 0.3).ok
        for proc in swarm.procs:
            assert proc.pid is not None
            tids = [int(t) for t in os.listdir(f"/proc/{proc.pid}/task")]
            assert len(tids) >= 4  # the bot loop, control and ticks, beside the main thread
            assert {os.sched_getscheduler(t) for t in tids} == {getattr(os, policy)}
    assert os.sched_getscheduler(0) == before
    assert build_parser().parse_args(["run", "--sched", "normal"]).sched == "normal"
    assert build_parser().parse_args(["run"]).sched == "batch"


class _Sink:
    """Collects what a BotPool reports, for the test's thread to wait on."""

    def __init__(self) -> None:
        self.got: queue.Queue[tuple[int, str]] = queue.Queue()
        self.disconnects: queue.Queue[Disconnect] = queue.Queue()
        self.logins = 0
        self.errors = 0

    def sent(self, room: int | None, lag: float, due: float) -> None:
        pass

    def deliveries(self, batch: list[Delivery]) -> None:
        for receiver, m, _, _ in batch:
            self.got.put((receiver, m))

    def error(self, _: object = None) -> None:
        self.errors += 1
        self.got.put((-1, "error"))

    def disconnected(self, event: Disconnect) -> None:
        self.disconnects.put(event)

    def login_time(self, micros: int) -> None:
        self.logins += 1

    def replayed(self, n: int) -> None:
        pass

    def resumed(self, micros: int) -> None:
        pass


def test_receiver_pool_logs_in_receives_and_reports_failures(fast_server: TestServer) -> None:
    with ChatClient(fast_server.host, fast_server.port) as owner:
        owner.login("taken_name", "the owner's password")
        sink = _Sink()
        names = ["pool_a", "pool_b", "taken_name"]
        pool = BotPool(fast_server.host, fast_server.port, names, "pool password", sink)
        pool.start([0, 1, 2])
        failures = pool.wait_logged_in(threading.Event())
        assert len(failures) == 1 and failures[0].startswith("taken_name: bad_credentials")
        assert pool.logged_in == sink.logins == 2
        owner.pm("to the pool")
        got = sorted(sink.got.get(timeout=10) for _ in range(2))
        assert got == [(0, "to the pool"), (1, "to the pool")]
        with ChatClient(fast_server.host, fast_server.port) as thief:
            thief.login("pool_a", "pool password")  # takes pool_a's session over
            assert sink.disconnects.get(timeout=10).reason == "network"
        assert pool.logged_in == 1
        pool.close()
        assert sink.errors == 0


def test_receiver_pool_reads_mixed_frames_in_order() -> None:
    """Deliveries mixed with a users_delta, a frame of an unknown type, malformed frames,
    a blank line and a bye: the deliveries arrive in order around them, each malformed
    one is an error, the delta, the unknown one and the blank line are ignored, and the
    bye ends the bot, however the reads split them."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def peer() -> None:
        conn, _ = listener.accept()
        with conn, conn.makefile("rwb") as f:
            login = json.loads(f.readline())
            ok = {"type": "login_ok", "username": "me", "new_user": False, "users": ["me"]}
            ok["id"] = login["id"]  # a reply echoes its request's id (PROTOCOL.md §Frames)
            f.write(json.dumps(ok).encode() + b"\n")
            f.flush()
            frames = [
                {"type": "broadcast", "from": "a", "message": "one", "ts": 1.0},
                {"type": "dm", "from": "a", "to": "me", "message": "two", "ts": 1.0},
                {"type": "users_delta", "count": 3, "joined": ["x", "y"], "left": []},
                {"type": "from_the_future", "message": "not a delivery"},
                {"type": "broadcast", "from": "a", "message": 'the "users', "ts": 1.0},
                {"type": "broadcast", "from": "a", "message": "three", "ts": 1.0},
            ]
            f.write(b"".join(json.dumps(x).encode() + b"\n" for x in frames))
            f.flush()  # likely one read: the fast path, except for the unknown type
            f.write(b'{"type":"broadcast","message":4}\n')  # message is not a string
            f.write(b'{"type":"broadcast","from":"a","message":"five","ts":1.0}\n')
            f.write(b"\r\n")  # a blank line: skipped
            f.write(b"null,null\n")  # two JSON values on one line: one bad frame
            f.write(b'{"type":"broadcast","from":"a","message":"six","ts":1.0}\r\n')
            f.write(b'{"type":"bye","reason":"server_shutdown"}\n')
            f.flush()
            f.read()  # until the pool closes the connection

    t = threading.Thread(target=peer, daemon=True)
    t.start()
    sink = _Sink()
    pool = BotPool("127.0.0.1", port, ["me"], "pool password", sink)
    with listener:
        pool.start([0])
        assert pool.wait_logged_in(threading.Event()) == []
        got = [sink.got.get(timeout=10)[1] for _ in range(8)]
        assert got == ["one", "two", 'the "users', "three", "error", "five", "error", "six"]
        assert sink.disconnects.get(timeout=10).reason == "network"
        pool.close()
    t.join(10)
    assert sink.got.empty()


def test_recorder_counts_a_read_at_once() -> None:
    rec = Recorder()
    arrived = 1_000_000
    batch = [pack(3, seq, arrived - 1000 * (seq + 1), 40) for seq in (0, 1, 2, 2, 1)]
    rec.deliveries([(7, m, arrived, None) for m in [*batch, "not a load message"]])
    second = rec.tick()
    assert second["delivered"] == 5 and second["latency"] == {1000: 1, 2000: 2, 3000: 2}
    rec.delivery(8, pack(3, 0, int(time.monotonic() * 1e6) - 500, 40))
    final = rec.final(reset=True)
    assert (final["delivered"], final["duplicates"], final["out_of_order"]) == (6, 1, 1)
    assert sum(final["latency"].values()) == 1  # only what no tick reported
    h = new_histogram()
    for part in (second, final):
        record_counts(h, part["latency"])
    assert h.get_total_count() == 6
    assert h.get_value_at_percentile(50) == 2000  # of ~0.5, 1, 2, 2, 3, 3 ms
    assert rec.final()["delivered"] == 0


@given(st.dictionaries(st.integers(-5, 4_000_000_000), st.integers(1, 1000), max_size=200))
def test_record_counts_matches_record_value(counts: dict[int, int]) -> None:
    bulk, one_by_one = new_histogram(), new_histogram()
    record_counts(bulk, counts)
    for micros, n in counts.items():
        one_by_one.record_value(min(max(micros, 1), MAX_US), n)
    assert bulk.get_total_count() == one_by_one.get_total_count() == sum(counts.values())
    assert bulk.get_min_value() == one_by_one.get_min_value()
    assert bulk.get_max_value() == one_by_one.get_max_value()
    for p in (0.0, 10.0, 50.0, 90.0, 99.0, 99.9, 100.0):
        assert bulk.get_value_at_percentile(p) == one_by_one.get_value_at_percentile(p)


def test_drop_all_then_rejoin(fast_server: TestServer) -> None:
    """chat-load churn --drop-all: every bot reset at once; the server lets them all go,
    then takes them all back, and the probe sees both."""
    cfg = LoadConfig(port=fast_server.port, mode="churn", clients=30, processes=2)
    cfg.server_pid = os.getpid()  # the server runs in this process
    result = run_load(cfg)
    assert result.ok and result.logged_in == 30 and not result.login_failures
    assert result.time_to_empty is not None and result.time_to_full is not None
    # The first logins stay the first logins'; the rejoin's have a line of their own.
    assert result.login_seconds > 0 and result.login_ms["p99"] > 0
    assert result.rejoin_login_seconds is not None and result.rejoin_login_seconds > 0
    assert "all logged in again after " in result.table()
    # The probe, which stayed, pinged the server meanwhile and every ping came back.
    assert result.drop_pings >= 1 and result.drop_ping_failures == 0
    assert result.drop_ping_ms["max"] > 0
    assert "dropped at once" in result.table() and "a client that stayed" in result.table()
    # What the rejoin cost each side, from /proc: the server's and each worker's CPU.
    assert result.rejoin_server_cpu_seconds is not None and result.rejoin_server_cpu_seconds >= 0
    assert len(result.rejoin_generator_cpu_seconds) == 2
    assert all(x >= 0 for x in result.rejoin_generator_cpu_seconds)
    assert "CPU meanwhile: server " in result.table()


def test_rejoin_cpu_names_a_generator_that_set_the_pace() -> None:
    result = LoadResult(LoadConfig(mode="churn"), time_to_full=2.0)
    rejoin_cpu(result, (10.0, [1.0, 1.0]), 11.5, [2.9, 1.4])
    assert result.rejoin_server_cpu_seconds == 1.5
    assert result.rejoin_generator_cpu_seconds == pytest.approx([1.9, 0.4])
    assert result.warnings == [
        "a generator process used 95 % of a core over the rejoin: the generator may "
        "have set its pace, not the server"
    ]
    unknown = LoadResult(LoadConfig(mode="churn"), time_to_full=2.0)
    rejoin_cpu(unknown, (None, [1.0, None]), None, [2.9, 1.4])  # no /proc figures
    assert unknown.rejoin_server_cpu_seconds is None
    assert unknown.rejoin_generator_cpu_seconds == [] and unknown.warnings == []


def test_html_report_is_self_contained_with_labelled_charts(
    fast_server: TestServer, tmp_path: Path
) -> None:
    result = run_load(small(fast_server.port, pm_fraction=0.8))
    out = tmp_path / "report.html"
    write_html(result, str(out))
    page = out.read_text()
    # throughput, latency over time, loss/errors, CPU, lateness, percentiles (no server
    # pid given: no server memory chart, no server CPU line)
    assert page.count("<svg") == 6
    for label in (
        "messages (per second)",
        "latency (ms)",
        "time since the first send (s)",
        "percentile (%)",
        "lost, by the second sent",
        "busiest generator process",
        "worst lag in the second (ms)",
    ):
        assert label in page, label
    assert "resident set size" not in page
    assert "<script" not in page and "<link" not in page  # nothing to fetch: opens offline
    external = re.findall(r'(?:src|href)="(?!#)([^"]*)"', page)
    assert external == []
    assert "chat-load run: " in page and ">OK<" in page
    assert "<th>scheduling</th><td>SCHED_BATCH</td>" in page  # how the generator ran


def test_drop_all_on_a_full_server_is_one_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    """The probe needs a connection of its own: on a server with room for the bots only,
    chat-load says so in one line and exits 2 (no traceback)."""
    with quiet_server(max_connections=4) as srv:
        argv = ["churn", "--drop-all", "--port", str(srv.port), "--clients", "4"]
        assert chat_load([*argv, "--processes", "1"]) == 2
    err = capsys.readouterr().err
    assert "the probe client could not log in" in err and "--max-connections" in err
    assert "Traceback" not in err


def test_no_server_is_named_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """chat-load with nothing listening says why, naming the address, before it starts
    a worker (it used to print "0/2 clients ... result FAILED" and nothing else)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # released: nothing listens there
    argv = ["run", "--port", str(port), "--clients", "2", "--processes", "1"]
    assert chat_load(argv) == 2
    out = capsys.readouterr()
    assert f"chat-load: connection refused: 127.0.0.1:{port}" in out.err
    assert "Traceback" not in out.err and "result" not in out.out


def test_failed_logins_are_shown_with_their_reason(fast_server: TestServer) -> None:
    first = make_names(1, seed=1)[0]
    with ChatClient(fast_server.host, fast_server.port) as owner:
        owner.login(first, "the owner's password")
    result = run_load(small(fast_server.port, mode="logins", clients=3))
    assert not result.ok and len(result.login_failures) == 1
    table = result.table()
    assert "failed logins 1: bad_credentials: wrong username or password" in table, table


def test_the_timeline_has_gaps_not_zeros_and_loss_not_in_flight(fast_server: TestServer) -> None:
    """A run that lost nothing: the seconds after the last delivery have no latency
    (None: a gap in the chart, where 0 ms read as fast), and its loss is 0 in every
    second it sent in, although messages were in flight at the seconds' ends (the
    report drew those as spikes of "expected, not yet seen")."""
    result = run_load(small(fast_server.port, rate=200.0, duration=2.0, drain=2.5))
    assert result.ok and result.lost == 0 and result.sent > 0
    rows = result.timeline
    quiet = [r for r in rows if r["delivered"] == 0]
    assert quiet, rows  # the drain outlasts the deliveries by a second or more
    for r in quiet:
        assert r["p50_ms"] is r["p99_ms"] is r["p999_ms"] is None, r
    for r in rows:
        if r["delivered"]:
            assert r["p50_ms"] is not None and 0 < r["p50_ms"] <= r["p99_ms"], r
        assert (r["lag_ms"] is None) == (r["sent"] == 0), r
    sending = [r for r in rows if r["lost"] is not None]
    assert len(sending) >= 2 and all(r["lost"] == 0 for r in sending), rows
    assert [r["second"] for r in rows] == sorted({r["second"] for r in rows})
