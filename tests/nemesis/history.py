"""The run's history: every operation, every frame on the wire, every hook event and
every fault, in the order they happened, on one clock.

A run records what each client *did* (``Op``: a send, its attempts and outcomes, a
login, a logout, a history read), what it *saw* (``FrameIn``/``FrameOut``: every frame
its sockets carried, decoded, tagged with the connection; ``Hook``: what the SDK passed
to the hooks) and what the nemesis *broke* (``Fault``). The checker
(tests/nemesis/checker.py) reads nothing else, so a history written to disk can be
checked again later, and a hand-made one tests the checker (test_checker.py).

Times are seconds since the run began (``time.monotonic`` from one origin): every
client is a thread of one process, so times from different clients compare.

Threads: :class:`History` is appended to by every client's receive and dispatch
threads, the drivers and the nemesis; ``_cond`` (a Condition over one lock) guards
``events`` and the indexes, and wakes those waiting for a reply or a seq.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgspec

__all__ = [
    "ConnClose",
    "ConnOpen",
    "Event",
    "Fault",
    "FrameIn",
    "FrameOut",
    "History",
    "Hook",
    "Meta",
    "Op",
    "describe",
    "dump",
    "load",
]


class Meta(msgspec.Struct, tag="meta", kw_only=True, omit_defaults=True):
    """What was run: the seed replays the fault schedule and every client's choices."""

    t: float = 0.0
    seed: int
    target: str
    duration: float
    users: list[str]
    options: dict[str, Any] = {}


class ConnOpen(msgspec.Struct, tag="open", kw_only=True, omit_defaults=True):
    """A client's TCP connection opened (before its login)."""

    t: float
    user: str
    client: int  # the ChatClient instance (one per login of the harness)
    conn: int  # unique in the run
    address: str = ""


class ConnClose(msgspec.Struct, tag="close", kw_only=True, omit_defaults=True):
    """A connection's socket was closed by the client (after EOF, an error or close())."""

    t: float
    user: str
    client: int
    conn: int


class FrameOut(msgspec.Struct, tag="out", kw_only=True, omit_defaults=True):
    """A frame the client wrote (or started to write: a cut may have eaten its end)."""

    t: float
    user: str
    client: int
    conn: int
    f: dict[str, Any]


class FrameIn(msgspec.Struct, tag="in", kw_only=True, omit_defaults=True):
    """A whole frame the client read from the server."""

    t: float
    user: str
    client: int
    conn: int
    f: dict[str, Any]


class Hook(msgspec.Struct, tag="hook", kw_only=True, omit_defaults=True):
    """A message the SDK passed to ``on_broadcast`` or ``on_dm`` (``kind``), or a
    ``disconnect``/``reconnect`` event (``detail`` says why)."""

    t: float
    user: str
    client: int
    kind: str
    seq: int | None = None
    sender: str | None = None
    to: str | None = None
    text: str | None = None
    room: str | None = None
    replayed: bool = False
    detail: str | None = None


class Op(msgspec.Struct, tag="op", kw_only=True, omit_defaults=True):
    """One step of an operation, Jepsen's way: ``invoke``, then ``ok`` (it happened),
    ``fail`` (it did not: the server refused) or ``info`` (unknown: a timeout or a cut).

    ``kind``: ``pm``, ``dm``, ``history``, ``login``, ``logout``, ``scan`` (the final read
    of the whole log). A send is one ``op`` number with one ``text``; each ``attempt``
    (the first, and every resend with the same ``cid``) is invoked and resolved."""

    t: float
    user: str
    client: int
    op: int
    phase: str
    kind: str
    attempt: int = 1
    text: str | None = None
    to: str | None = None
    room: str | None = None
    cid: str | None = None
    seq: int | None = None
    queued: bool | None = None
    since: int | None = None
    error: str | None = None


class Fault(msgspec.Struct, tag="fault", kw_only=True, omit_defaults=True):
    """The nemesis: ``start`` and ``end`` of a fault on ``target``, or a ``note`` (a
    restart that had to be retried, a heal)."""

    t: float
    kind: str
    target: str
    phase: str
    detail: str = ""


Event = Meta | ConnOpen | ConnClose | FrameOut | FrameIn | Hook | Op | Fault

# Frames left out of the history: keepalive and user-list traffic say nothing about
# messages, and at one push per login per client they would be most of the file.
UNRECORDED = frozenset({"ping", "pong", "users", "users_delta"})


class History:
    """The recorder every thread of a run appends to (see the module docstring)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self._cond = threading.Condition()  # guards everything below
        self.events: list[Event] = []
        # (user, request id) -> the reply frame: the driver waits on its resends here.
        self._replies: dict[tuple[str, object], dict[str, Any]] = {}
        # user -> the highest seq any of its connections has read (the final drain).
        self._top: dict[str, int] = {}
        # (user, message text) -> the cid its frame carried: texts are unique in a run.
        self._cids: dict[tuple[str, str], str] = {}
        self._conns = 0
        self._clients = 0
        self.unrecorded = 0  # frames of UNRECORDED types seen (counted only)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def add(self, event: Event) -> None:
        with self._cond:
            self.events.append(event)

    def new_conn(self) -> int:
        with self._cond:
            self._conns += 1
            return self._conns

    def new_client(self) -> int:
        with self._cond:
            self._clients += 1
            return self._clients

    def frame_in(self, user: str, client: int, conn: int, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        with self._cond:
            if kind in UNRECORDED:
                self.unrecorded += 1
                return
            self.events.append(FrameIn(t=self.now(), user=user, client=client, conn=conn, f=frame))
            rid = frame.get("id")
            if rid is not None:
                self._replies[(user, rid)] = frame
            seq = frame.get("seq")
            if (
                kind in ("broadcast", "dm")
                and isinstance(seq, int)
                and seq > self._top.get(user, 0)
            ):
                self._top[user] = seq
            self._cond.notify_all()

    def frame_out(self, user: str, client: int, conn: int, frame: dict[str, Any]) -> None:
        if frame.get("command") in UNRECORDED:
            return
        with self._cond:
            self.events.append(FrameOut(t=self.now(), user=user, client=client, conn=conn, f=frame))
            cid, text = frame.get("cid"), frame.get("message")
            if isinstance(cid, str) and isinstance(text, str):
                self._cids[(user, text)] = cid

    def cid_of(self, user: str, text: str) -> str | None:
        """The cid ``user``'s frame carrying ``text`` was written with, if one was."""
        with self._cond:
            return self._cids.get((user, text))

    def wait_reply(self, user: str, rid: object, timeout: float) -> dict[str, Any] | None:
        """The reply to ``user``'s request ``rid`` (an ack or an error), or None."""
        with self._cond:
            self._cond.wait_for(lambda: (user, rid) in self._replies, timeout)
            return self._replies.get((user, rid))

    def top(self, user: str) -> int:
        with self._cond:
            return self._top.get(user, 0)

    def wait_until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Until ``done()`` (called under the lock: keep it quick), or ``timeout``."""
        with self._cond:
            return self._cond.wait_for(done, timeout)

    def tops(self) -> dict[str, int]:
        """The per-user highest seq read (call only under :meth:`wait_until`'s lock)."""
        return self._top

    def snapshot(self) -> list[Event]:
        with self._cond:
            return list(self.events)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Event)


def dump(events: Iterable[Event], path: Path) -> None:
    """The history as JSON lines, one event each."""
    with path.open("wb") as f:
        for ev in events:
            f.write(_encoder.encode(ev))
            f.write(b"\n")


def load(path: Path) -> list[Event]:
    return [_decoder.decode(line) for line in path.read_bytes().splitlines() if line.strip()]


def describe(ev: Event, width: int = 60) -> str:
    """One line for a person: when, who, what (message texts cut to ``width``)."""

    def cut(value: Any) -> str:
        text = str(value)
        return text if len(text) <= width else text[: width - 3] + "..."

    def frame(f: dict[str, Any]) -> str:
        shown = {
            k: (cut(v) if k == "message" else v)
            for k, v in f.items()
            if k not in ("password", "users", "ts")
        }
        if "messages" in shown:
            seqs = [m.get("seq") for m in f.get("messages") or () if isinstance(m, dict)]
            shown["messages"] = f"[{len(seqs)} messages, seqs {seqs[:1]}..{seqs[-1:]}]"
        return msgspec.json.encode(shown).decode()

    t = f"{ev.t:9.3f} s"
    if isinstance(ev, FrameOut):
        return f"{t}  {ev.user} (conn {ev.conn}) sent     {frame(ev.f)}"
    if isinstance(ev, FrameIn):
        return f"{t}  {ev.user} (conn {ev.conn}) received {frame(ev.f)}"
    if isinstance(ev, Op):
        parts = [f"op {ev.op} {ev.kind} {ev.phase}"]
        if ev.attempt != 1:
            parts.append(f"attempt {ev.attempt}")
        for name in ("to", "cid", "seq", "queued", "since", "error"):
            value = getattr(ev, name)
            if value is not None:
                parts.append(f"{name}={value}")
        if ev.text is not None:
            parts.append(repr(cut(ev.text)))
        return f"{t}  {ev.user} (client {ev.client}) " + " ".join(parts)
    if isinstance(ev, Hook):
        what = f"seq {ev.seq} from {ev.sender}" if ev.seq is not None else (ev.detail or "")
        return f"{t}  {ev.user} (client {ev.client}) hook on_{ev.kind} {what}"
    if isinstance(ev, Fault):
        return f"{t}  nemesis {ev.kind} {ev.target} {ev.phase} {ev.detail}".rstrip()
    if isinstance(ev, ConnOpen):
        return f"{t}  {ev.user} (client {ev.client}) opened conn {ev.conn} to {ev.address}"
    if isinstance(ev, ConnClose):
        return f"{t}  {ev.user} (client {ev.client}) closed conn {ev.conn}"
    return f"{t}  {ev}"
