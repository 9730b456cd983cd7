"""One nemesis run, from the first process started to the report written.

:func:`run` sets up a target (a cluster of three nodes with a private Redis and a
private PostgreSQL, each reached through links of the switchboard; or the single SQLite
server, its database on a small tmpfs), logs every user in, starts their traffic and
the nemesis, and after ``duration`` seconds:

1. heals everything (links up, every process running, the disk freed);
2. stops the traffic, logs every user back in and sends every message whose outcome is
   still open again with its cid until it is acked or refused (docs/PROTOCOL.md
   §Idempotent sends);
3. posts a marker from a user of its own and waits until every user has received it:
   by then every message stored before it should have reached everyone;
4. reads the whole log (lobby, every room, and every pair's DMs by one of the pair);
5. stops every process, checks the history, writes the history, the report and the
   processes' logs into the run's directory.

The users also join, part and talk in :data:`ROOMS` (docs/PROTOCOL.md §Rooms); the
marker user creates them before the traffic and never parts, so it can read every room's
whole log at the end.

Everything it starts it stops, by pid, whatever happens (an ExitStack); what a run
killed with SIGKILL could not stop (a tmpfs, PostgreSQL's directory) the next run sweeps
first (:func:`~tests.nemesis.services.sweep`).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from tests.nemesis.adversaries import NeverReader, Pipeliner, Vandal
from tests.nemesis.checker import CheckResult, check
from tests.nemesis.clients import Driver, DriverSettings
from tests.nemesis.crowd import HALL, Crowd, crowd_names
from tests.nemesis.guests import Guest
from tests.nemesis.history import Event, History, Meta, Op, dump
from tests.nemesis.nemesis import FaultSpec, Nemesis, schedule
from tests.nemesis.proxy import Switchboard
from tests.nemesis.services import ChatNode, Postgres, Redis, Tmpfs, sweep

__all__ = ["RunConfig", "RunResult", "run"]

log = logging.getLogger(__name__)

NAMES = ("ada", "bob", "cyd", "dee", "eve", "fay", "gus", "hal", "ivy", "jon", "kim", "lou")
MARKER_USER = "marker"
NEVER_READER = "slug"
VANDAL = "vandal"
PIPELINER = "pipe"
ROOMS = ("dev", "ops", "fun")
# With a crowd (RunConfig.crowd): its big room first, then small rooms of the drivers
# and a third of the crowd (tests/nemesis/crowd.py).
CROWD_ROOMS = (HALL, "dev", "ops", "fun", "tea")
# Nodes as a user would run them, but quiet and quick to hash: the run is about
# messages, not argon2 (docs/SECURITY.md has the real cost).
NODE_ARGS = ["--users-interval", "0", "--password-hash", "load-test"]


@dataclass
class RunConfig:
    seed: int
    duration: float
    target: str  # "cluster" or "single"
    out: Path  # the run gets a directory of its own under this one
    users: int = 8
    nodes: int = 3
    node_timeout: float = 3.0
    drain_timeout: float = 60.0  # after the heal, for the open sends and the marker
    # The first user an operator of every room, kicking, banning and muting the others
    # during the traffic (docs/PROTOCOL.md §Moderation).
    moderation: bool = True
    # A client that never reads, one that sends hostile frames and one that logs in
    # with more requests in the same packet, beside the users
    # (tests/nemesis/adversaries.py).
    adversaries: bool = True
    # IRC guests with echo-message, in lobby and (single server) a guest room
    # (tests/nemesis/guests.py).
    guests: int = 2
    # Members that only read (tests/nemesis/crowd.py): with more than 128, lobby and
    # the crowd's room are sent in turns (chatroom_server.fanturns). 0: none.
    crowd: int = 0
    tmpfs_mb: int = 24
    settings: DriverSettings = field(default_factory=DriverSettings)

    def replay_command(self) -> str:
        return (
            f"python -m tests.nemesis --seed {self.seed} --duration {self.duration:g} "
            f"--target {self.target} --users {self.users}"
            + (f" --crowd {self.crowd}" if self.crowd else "")
        )


@dataclass
class RunResult:
    config: RunConfig
    directory: Path
    events: list[Event]
    specs: list[FaultSpec]
    check: CheckResult
    problems: list[str]  # the harness's own: a step that could not be completed
    seconds: float
    marker: int | None = None
    not_exercised: list[str] = field(default_factory=list)  # what this machine cannot do

    @property
    def ok(self) -> bool:
        return self.check.ok and not self.problems


class ClusterTarget:
    """Three nodes, a private Redis and a private PostgreSQL; node i reaches Redis and
    PostgreSQL only through links ``redis-i`` and ``pg-i``, clients reach it through
    ``client-i``."""

    name = "cluster"

    def __init__(
        self,
        workdir: Path,
        switchboard: Switchboard,
        nodes: int,
        node_timeout: float,
        stack: ExitStack,
        irc: bool = False,
    ) -> None:
        self.switchboard = switchboard
        self.node_timeout = node_timeout
        self.tmpfs: Tmpfs | None = None
        self.redis: Redis | None = Redis(workdir)
        self.redis.start()
        stack.callback(self.redis.proc.kill)
        self.pg: Postgres | None = Postgres(workdir)
        stack.callback(self.pg.remove)
        self.pg.start()
        self.pg.create_database()
        self.nodes: list[ChatNode] = []
        self._links: list[str] = []
        for i in range(nodes):
            r = switchboard.add(f"redis-{i + 1}", ("127.0.0.1", self.redis.port))
            p = switchboard.add(f"pg-{i + 1}", ("127.0.0.1", self.pg.port))
            args = ["--cluster", f"redis://127.0.0.1:{r.address[1]}/0"]
            args += ["--cluster-prefix", "nemesis", "--node-timeout", f"{node_timeout:g}"]
            url = self.pg.url(p.address[1])
            node = ChatNode(f"node{i + 1}", workdir, url, args + NODE_ARGS, irc=irc)
            stack.callback(node.proc.kill)
            node.start()
            self.nodes.append(node)
            switchboard.add(f"client-{i + 1}", node.address)
            self._links += [r.name, p.name, f"client-{i + 1}"]

    def client_link(self, node: int) -> str:
        return f"client-{node + 1}"

    def redis_link(self, node: int) -> str:
        return f"redis-{node + 1}"

    def pg_link(self, node: int) -> str:
        return f"pg-{node + 1}"

    def switchboard_links(self) -> list[str]:
        return list(self._links)


class SingleTarget:
    """The single SQLite server, its database on a tmpfs when one can be mounted."""

    name = "single"

    def __init__(
        self,
        workdir: Path,
        switchboard: Switchboard,
        tmpfs_mb: int,
        stack: ExitStack,
        irc: bool = False,
    ) -> None:
        self.switchboard = switchboard
        self.node_timeout = 0.0
        self.redis: Redis | None = None
        self.pg: Postgres | None = None
        self.tmpfs: Tmpfs | None = None
        self.why_no_disk = Tmpfs.possible()
        data = workdir
        if self.why_no_disk is None:
            self.tmpfs = Tmpfs(workdir / "disk", tmpfs_mb)
            stack.callback(self.tmpfs.unmount)
            data = self.tmpfs.path
        node = ChatNode("node1", workdir, str(data / "chat.db"), NODE_ARGS, irc=irc)
        stack.callback(node.proc.kill)
        node.start()
        self.nodes = [node]
        switchboard.add("client-1", node.address)

    def client_link(self, node: int) -> str:
        return "client-1"

    def redis_link(self, node: int) -> str:
        raise ValueError("the single server has no Redis")

    def pg_link(self, node: int) -> str:
        raise ValueError("the single server has no PostgreSQL")

    def switchboard_links(self) -> list[str]:
        return ["client-1"]


def _in_parallel(jobs: list[tuple[str, Any]], timeout: float) -> None:
    """Run each callable on a thread of its own and wait (bounded) for all."""
    threads = [threading.Thread(target=fn, name=name, daemon=True) for name, fn in jobs]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))


def run(config: RunConfig, progress: Any = None) -> RunResult:
    """One run (see the module docstring). ``progress``: a callable given a line of
    text at each phase (the command line prints them)."""
    say = progress or (lambda text: None)
    began = time.monotonic()
    for line in sweep():  # what runs killed earlier left mounted or on disk
        say(line)
    directory = config.out.resolve() / f"{config.target}-{config.seed}"
    directory.mkdir(parents=True, exist_ok=True)
    history = History()
    problems: list[str] = []
    users = list(NAMES[: config.users])
    # Both targets talk in rooms: the cluster's nodes apply room events from the stream
    # (67864e9), and runs with rooms there (seeds 4061, 5101, 5102) were clean.
    rooms = CROWD_ROOMS if config.crowd else ROOMS
    crowd_stats: dict[str, int] = {}
    crowd_users = crowd_names(config.crowd)
    settings = replace(config.settings, rooms=rooms)
    with ExitStack() as stack:
        switchboard = Switchboard()
        stack.callback(switchboard.close)
        say(f"starting the {config.target} target in {directory}")
        target: ClusterTarget | SingleTarget
        if config.target == "cluster":
            target = ClusterTarget(
                directory, switchboard, config.nodes, config.node_timeout, stack, config.guests > 0
            )
        else:
            target = SingleTarget(directory, switchboard, config.tmpfs_mb, stack, config.guests > 0)
        specs = schedule(
            config.seed,
            config.duration,
            config.target,
            len(target.nodes),
            config.node_timeout,
            target.tmpfs is not None,
        )
        options: dict[str, Any] = {
            "nodes": len(target.nodes),
            "node_timeout": config.node_timeout,
            "marker_user": MARKER_USER,
            "settings": asdict(settings),
            "rooms": list(rooms),
            "moderators": users[:1] if rooms and config.moderation else [],
            "adversaries": [NEVER_READER, VANDAL, PIPELINER] if config.adversaries else [],
            "guests": [f"guest{k + 1}" for k in range(config.guests)],
            "crowd": crowd_users,
            "faults": [s.describe() for s in specs],
        }
        not_exercised: list[str] = []
        if isinstance(target, SingleTarget) and target.why_no_disk:
            options["no_disk_fault"] = target.why_no_disk
            not_exercised.append(target.why_no_disk)
        history.add(
            Meta(
                seed=config.seed,
                target=config.target,
                duration=config.duration,
                users=users,
                options=options,
            )
        )
        links = [switchboard.link(target.client_link(i)).hostport for i in range(len(target.nodes))]
        drivers = []
        for k, user in enumerate(users):
            hosts = links[k % len(links) :] + links[: k % len(links)]
            moderator = user in options["moderators"]
            drivers.append(
                Driver(user, users, hosts, history, config.seed, settings, moderator=moderator)
            )
        mark = Driver(MARKER_USER, users, links, history, config.seed, settings)

        def abort_all() -> None:
            for d in drivers:
                d.abort.set()

        stack.callback(abort_all)
        for d in drivers:  # registered before anyone DMs them
            if not d.login(resume=False, deadline=history.now() + 30):
                raise RuntimeError(f"{d.user} could not log in before the faults began")
        if rooms:
            moderators = [d for d in drivers if d.moderator]
            _create_rooms(mark, moderators, rooms, history.now() + 30)
        crowd: Crowd | None = None
        if crowd_users:
            # Through the clients' links, as the drivers: cuts and kills reach them.
            addresses = [
                switchboard.link(target.client_link(i)).address for i in range(len(target.nodes))
            ]
            crowd = Crowd(crowd_users, addresses, history, config.seed, small_rooms=rooms[1:])
            stack.callback(crowd.stop.set)
            crowd.start()
            say(f"logging the crowd of {len(crowd_users)} in")
            if not crowd.wait_ready(120.0):
                raise RuntimeError(
                    f"only {crowd.ready()} of the crowd's {len(crowd_users)} members were "
                    "logged in and in their rooms before the faults"
                )
        nemesis = Nemesis(target, history, specs)
        nemesis.mark_ready()
        t0 = history.now()
        say(
            f"seed {config.seed}: {len(specs)} faults over {config.duration:g} s, "
            f"{len(users)} users"
        )
        adversaries: list[NeverReader | Vandal | Pipeliner] = []
        if config.adversaries:
            direct = [n.address for n in target.nodes]
            adversaries = [
                NeverReader(NEVER_READER, direct, history, config.seed),
                Vandal(VANDAL, direct, history, config.seed, rooms=rooms),
                Pipeliner(PIPELINER, direct, history, config.seed),
            ]
        irc = [("127.0.0.1", n.irc_port) for n in target.nodes if n.irc_port is not None]
        # A cluster's guests have lobby only (docs/PROTOCOL.md §Guest rooms).
        guests = [
            Guest(nick, irc, history, config.seed, room=config.target == "single")
            for nick in options["guests"]
        ]
        for d in drivers:
            d.start()
        for a in [*adversaries, *guests]:
            a.start()
        nemesis.start()
        stop = threading.Event()
        stop.wait(max(0.0, t0 + config.duration - history.now()))

        say("healing every fault")
        for a in [*adversaries, *guests]:
            a.stop.set()
        nemesis.heal()
        for a in [*adversaries, *guests]:
            a.thread.join(30)
            if a.thread.is_alive():
                problems.append(f"{a.thread.name} did not stop")
            problems += [f"{a.thread.name}: {e}" for e in a.errors]
        for d in drivers:
            d.stop.set()
        for d in drivers:
            d.thread.join(3 * config.settings.timeout + 10)
            if d.thread.is_alive():
                problems.append(f"driver {d.user} did not stop")
        deadline = history.now() + config.drain_timeout
        say("resolving every open send")
        _in_parallel(
            [(f"finish-{d.user}", lambda d=d: d.finish_sends(deadline)) for d in drivers],
            config.drain_timeout + 10,
        )
        for d in drivers:
            if d.unresolved:
                problems.append(
                    f"{d.user}: {len(d.unresolved)} sends still open after the heal "
                    f"(last error: {d.unresolved[0].error})"
                )
            problems += [f"{d.user}: {e}" for e in d.errors]

        say("posting the marker and waiting for everyone to receive it")
        marker = _post_marker(mark, history, deadline)
        if marker is None:
            problems.append("the marker could not be posted after the heal")
        else:
            everyone = users + crowd_users
            reached = history.wait_until(
                lambda: all(history.tops().get(u, 0) >= marker for u in everyone),
                max(5.0, deadline - history.now()),
            )
            if not reached:
                slow = [u for u in everyone if history.top(u) < marker]
                problems.append(
                    f"not every user received the marker: {', '.join(slow[:12])}"
                    + (f" and {len(slow) - 12} more" if len(slow) > 12 else "")
                )
        say("reading the whole log")
        if not mark.scan([None], rooms):
            problems.append("the final scan of lobby and the rooms failed")
        for i, d in enumerate(sorted(drivers, key=lambda d: d.user)):
            partners = sorted(users)[i:]
            if not d.scan(partners):
                problems.append(f"{d.user}'s final scan of its DMs failed")
        _in_parallel([(f"close-{d.user}", d.close) for d in [*drivers, mark]], 30)
        if crowd is not None:
            crowd.stop.set()
            crowd.thread.join(30)
            if crowd.thread.is_alive():
                problems.append("the crowd's thread did not stop")
            problems += [f"crowd: {e}" for e in crowd.errors]
            crowd_stats = crowd.stats()
        say("stopping the target")
        for node in target.nodes:
            node.proc.stop()
        if target.redis is not None:
            target.redis.proc.stop()
        if target.pg is not None:
            target.pg.proc.stop()
        nemesis_crashes = nemesis.crashes

    events = history.snapshot()
    say("checking the history")
    result = check(events)
    result.stats.update(crowd_stats)
    if nemesis_crashes:
        problems.append(
            f"{nemesis_crashes} server process(es) exited by themselves "
            "(the faults' notes say which)"
        )
    dump(events, directory / "history.jsonl")
    outcome = RunResult(
        config, directory, events, specs, result, problems, time.monotonic() - began, marker
    )
    (directory / "summary.json").write_text(json.dumps(summary(outcome), indent=2) + "\n")
    try:
        from tests.nemesis.report import write_report

        write_report(outcome, directory / "report.html")
    except ImportError as exc:  # matplotlib is the report extra
        print(f"no HTML report: {exc}", file=sys.stderr)
    return outcome


def _create_rooms(
    mark: Driver, moderators: list[Driver], rooms: tuple[str, ...], deadline: float
) -> None:
    """The marker user creates every room before the faults and stays in them: the
    final scan reads each room's whole log as it (a member reads from its join on).
    Each moderator joins every room and is made its operator (``+o``) by the owner, so
    it may kick, ban and mute anyone but the owner (docs/PROTOCOL.md §Moderation)."""
    if not mark.login(resume=False, deadline=deadline):
        raise RuntimeError("the marker user could not log in to create the rooms")
    for room in rooms:
        if not mark.room_op("join", room):
            raise RuntimeError(f"the marker user could not create room {room}")
        for d in moderators:
            if not d.room_op("join", room):
                raise RuntimeError(f"{d.user} could not join room {room}")
            assert mark.client is not None
            mark.client.mode(room, "+o", d.user)
    mark.logout()


def _post_marker(mark: Driver, history: History, deadline: float) -> int | None:
    """The marker user's pm, sent again with its cid until acked; its seq (recorded as a
    ``marker`` op)."""
    if not mark.login(resume=False, deadline=deadline):
        return None
    mark.send(None)
    mark.finish_sends(deadline)
    if mark.unresolved or mark.client is None:
        return None
    acked = [
        e
        for e in history.snapshot()
        if isinstance(e, Op)
        and e.user == MARKER_USER
        and e.phase == "ok"
        and e.kind == "pm"
        and e.seq is not None
    ]
    if not acked or acked[-1].seq is None:
        return None
    seq = acked[-1].seq
    history.add(
        Op(
            t=history.now(),
            user=MARKER_USER,
            client=mark.client.number,
            op=mark._next_op(),
            phase="ok",
            kind="marker",
            seq=seq,
        )
    )
    return seq


def summary(result: RunResult) -> dict[str, Any]:
    """What a run found, as JSON: counts, anomalies, problems."""
    c = result.config
    return {
        "seed": c.seed,
        "target": c.target,
        "duration": c.duration,
        "replay": c.replay_command(),
        "seconds": round(result.seconds, 1),
        "faults": len(result.specs),
        "stats": result.check.stats,
        "anomalies": [
            {
                "kind": a.kind,
                "level": a.level,
                "text": a.text,
                "users": a.users,
                "seqs": a.seqs[:50],
            }
            for a in result.check.anomalies
        ],
        "notes": result.check.notes,
        "problems": result.problems,
        "not_exercised": result.not_exercised,
        "ok": result.ok,
    }
