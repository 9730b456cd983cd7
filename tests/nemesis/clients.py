"""The run's clients: SDK clients with a tap on their sockets, and one driver per user.

:class:`NemesisClient` is ``chatroom.ChatClient`` as a user runs it (several hosts,
``reconnect=True``, resume with ``since``, cids on every send) with one change: each
socket it opens is a :class:`TapSocket`, which records every whole frame read and
written on that connection into the run's :class:`~tests.nemesis.history.History`. So
the history holds what crossed the wire on each connection, not what the SDK made of
it, and the hooks record what the SDK passed on: the checker compares the two.

:class:`Driver` is one user's traffic: public messages, DMs (to users online or away),
history reads, logouts and logins (resuming, or fresh), each recorded as an ``Op``.
With ``DriverSettings.rooms`` (the single
target: rooms are off on a cluster's nodes) the client logs in with rooms on, joins and
parts those rooms, sends public messages to them as well as to ``lobby``, and reads
their history. A send whose outcome is unknown (a timeout, a cut) or refused with ``unavailable`` is
sent again later with the same cid, as docs/PROTOCOL.md §Idempotent sends allows, until
it is acked or refused for good; the final phase resolves every one still open.

Threads: a driver runs on its own thread and owns its fields; its client's receive and
dispatch threads only append to the history. ``Driver.stop`` (an Event) ends the loop.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from chatroom import (
    Broadcast,
    ChatClient,
    ChatError,
    DirectMessage,
    Disconnect,
    Reconnected,
    ServerError,
    UsageError,
)
from chatroom.protocol import DmCommand, FrameDecoder, PmCommand
from tests.nemesis.history import ConnClose, ConnOpen, History, Hook, Op

__all__ = ["Driver", "DriverSettings", "NemesisClient", "TapSocket"]

log = logging.getLogger(__name__)

PASSWORD = "nemesis password"

# Refusals after which a send is sent again (with its cid): the message was not stored
# (docs/PROTOCOL.md §Message log, §Flood control) and may be, later.
RETRYABLE = frozenset({"unavailable", "rate_limited", "not_logged_in", "not_sent"})


class TapSocket(socket.socket):
    """A client socket that records every whole frame it reads or writes."""

    def __init__(self, fileno: int, history: History, user: str, client: int, address: str):
        super().__init__(fileno=fileno)
        self.history = history
        self.user = user
        self.client = client
        self.conn = history.new_conn()
        self._decoder = FrameDecoder(64 * 1024 * 1024)
        self._closed_once = False
        history.add(
            ConnOpen(t=history.now(), user=user, client=client, conn=self.conn, address=address)
        )

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = super().recv(bufsize, flags)
        if data:
            for frame in self._decoder.feed(data):
                self.history.frame_in(self.user, self.client, self.conn, _decode(frame))
        return data

    def sendall(self, data: Any, flags: int = 0) -> None:
        # Recorded before the write: a frame cut short on the way was still attempted,
        # and the checker treats it as possibly received by the server.
        for frame in bytes(data).split(b"\n"):
            if frame.strip():
                self.history.frame_out(self.user, self.client, self.conn, _decode(frame))
        super().sendall(data, flags)

    def close(self) -> None:
        if not self._closed_once:
            self._closed_once = True
            h = self.history
            h.add(ConnClose(t=h.now(), user=self.user, client=self.client, conn=self.conn))
        super().close()


def _decode(frame: bytes) -> dict[str, Any]:
    try:
        value = msgspec.json.decode(frame)
    except msgspec.DecodeError:
        return {"raw": frame.decode("utf-8", "replace")}
    return value if isinstance(value, dict) else {"raw": frame.decode("utf-8", "replace")}


class NemesisClient(ChatClient):
    """``ChatClient`` whose sockets are :class:`TapSocket` (see the module docstring)."""

    def __init__(self, recorder: History, user: str, **kwargs: Any) -> None:
        self.recorder = recorder
        self.user = user
        self.number = recorder.new_client()
        super().__init__(**kwargs)

        @self.on_broadcast
        def _public(e: Broadcast) -> None:
            self._hook("broadcast", e.seq, e.sender, None, e.message, e.replayed, e.room)

        @self.on_dm
        def _direct(e: DirectMessage) -> None:
            self._hook("dm", e.seq, e.sender, e.to, e.message, e.replayed, None)

        @self.on_disconnect
        def _gone(e: Disconnect) -> None:
            h = self.recorder
            h.add(
                Hook(t=h.now(), user=user, client=self.number, kind="disconnect", detail=e.reason)
            )

        @self.on_reconnect
        def _back(e: Reconnected) -> None:
            h = self.recorder
            detail = f"replayed {e.replayed}" + (", truncated" if e.replay_truncated else "")
            h.add(Hook(t=h.now(), user=user, client=self.number, kind="reconnect", detail=detail))

    def _hook(
        self,
        kind: str,
        seq: int | None,
        sender: str,
        to: str | None,
        text: str,
        replayed: bool,
        room: str | None,
    ) -> None:
        h = self.recorder
        h.add(
            Hook(
                t=h.now(),
                user=self.user,
                client=self.number,
                kind=kind,
                seq=seq,
                sender=sender,
                to=to,
                text=text,
                room=room,
                replayed=replayed,
            )
        )

    def _open_one(self, host: str, port: int) -> socket.socket:
        # The one seam: the SDK opens its sockets here (connect and every reconnect).
        sock = super()._open_one(host, port)
        timeout = sock.gettimeout()
        tap = TapSocket(sock.detach(), self.recorder, self.user, self.number, f"{host}:{port}")
        tap.settimeout(timeout)
        return tap


@dataclass
class DriverSettings:
    """How a driver behaves (the same for every user of a run)."""

    rate: float = 0.8  # operations per second, on average (exponential gaps)
    timeout: float = 5.0  # the SDK's timeout: an ack not back by then is unknown
    keepalive: float = 2.0  # a silent server is dead after keepalive + timeout
    max_attempts: int = 20  # resends of one message during the run (the end does more)
    retry_after: tuple[float, float] = (0.5, 2.0)  # seconds before a resend, at random
    long_every: int = 25  # one message in this many is long (to span TCP reads)
    max_message: int = 4000
    # Rooms to join, part and talk in besides lobby (empty: lobby only, protocol v1).
    rooms: tuple[str, ...] = ()
    room_weights: tuple[tuple[str, float], ...] = (("join", 0.12), ("part", 0.04))
    # The moderator (one user, an operator of every room, who never parts): how often it
    # moderates, and which action (docs/PROTOCOL.md §Moderation).
    moderate_weight: float = 0.8
    moderation: tuple[tuple[str, float], ...] = (
        ("kick", 0.3),
        ("ban", 0.25),
        ("unban", 0.25),
        ("mute", 0.1),
        ("unmute", 0.1),
    )
    weights: tuple[tuple[str, float], ...] = (
        ("pm", 0.50),
        ("dm", 0.28),
        ("history", 0.14),
        ("away", 0.08),
    )


@dataclass
class Outstanding:
    """A send not yet acked nor refused for good."""

    op: int
    kind: str
    text: str
    to: str | None
    cid: str | None
    attempts: int
    error: str
    due: float = 0.0  # history time of the next resend
    room: str | None = None  # a public message's room (None: lobby)


_WORDS = ("nemesis", "seq", "ack", "cut", "resume", "héllo", "字", "🙂", "quiet", "loud")


class Driver:
    """One user's traffic on its own thread (see the module docstring).

    ``stop`` ends the traffic loop (the run's faults are over); ``abort`` ends every
    wait, the final phase's included (the harness is giving up)."""

    def __init__(
        self,
        user: str,
        users: Sequence[str],
        hosts: Sequence[str],
        history: History,
        seed: int,
        settings: DriverSettings,
        *,
        moderator: bool = False,
    ) -> None:
        self.user = user
        # An operator of every room (the harness makes it one before the traffic): it
        # kicks, bans, unbans, mutes and unmutes the others, and never parts.
        self.moderator = moderator
        self.users = list(users)
        self.hosts = list(hosts)
        self.history = history
        self.settings = settings
        self.rng = random.Random(f"{seed}/{user}")  # the user's choices: replayable
        self.jitter = random.Random(f"{seed}/{user}/time")  # waits: not part of a replay
        self.stop = threading.Event()
        self.abort = threading.Event()
        self.client: NemesisClient | None = None
        self.cursor: int | None = None  # where a resuming login starts
        self.ops = 0
        self.unresolved: list[Outstanding] = []
        self.errors: list[str] = []  # the driver's own failures (bugs of the harness)
        self.thread = threading.Thread(target=self._main, name=f"nemesis-{user}", daemon=True)

    # ------------------------------------------------------------------ recording

    def _op(self, phase: str, kind: str, op: int, **fields: Any) -> None:
        client = self.client.number if self.client is not None else 0
        h = self.history
        h.add(Op(t=h.now(), user=self.user, client=client, op=op, phase=phase, kind=kind, **fields))

    def _next_op(self) -> int:
        self.ops += 1
        return self.ops

    # ------------------------------------------------------------------ the loop

    def start(self) -> None:
        """The traffic loop on the driver's thread (after a first :meth:`login`)."""
        self.thread.start()

    def _main(self) -> None:
        try:
            while not self.stop.wait(self.jitter.expovariate(self.settings.rate)):
                self.step()
        except Exception as exc:
            log.exception("driver %s failed", self.user)
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def step(self) -> None:
        """One operation, chosen by the user's seeded generator."""
        if self.client is None or self.client.closed:
            # Ended for good (session_replaced, a refused re-login): log in again.
            self.login(resume=True)
            return
        due = [o for o in self.unresolved if o.due <= self.history.now()]
        if due:
            # A client that did not get its ack sends again soon (§Idempotent sends).
            self.resend(due[0])
            return
        weights = self.settings.weights
        if self.settings.rooms:
            weights = (*weights, *self.settings.room_weights)
            if self.moderator:
                weights = tuple((k, w) for k, w in weights if k != "part")
                weights = (*weights, ("moderate", self.settings.moderate_weight))
        names = [k for k, _ in weights]
        kind = self.rng.choices(names, [w for _, w in weights])[0]
        if kind == "pm":
            self.send(None, room=self._pick_room())
        elif kind == "dm":
            self.send(self.rng.choice(self.users))
        elif kind == "history":
            self.read_history()
        elif kind in ("join", "part"):
            self.room_op(kind, self.rng.choice(self.settings.rooms))
        elif kind == "moderate":
            self.moderate()
        elif kind == "away":
            self.logout()
            self.stop.wait(self.jitter.uniform(0.5, 6.0))
            self.login(resume=self.rng.random() < 0.7)

    def _text(self, op: int) -> str:
        if op % self.settings.long_every == 0:
            size = self.rng.randint(1000, self.settings.max_message - 40)
        else:
            size = self.rng.randint(0, 120)
        words: list[str] = []
        while sum(len(w) + 1 for w in words) < size:
            words.append(self.rng.choice(_WORDS))
        return f"{self.user}.{op} " + " ".join(words)[:size]

    # ------------------------------------------------------------------ sessions

    def _new_client(self, since: int | None) -> NemesisClient:
        s = self.settings
        return NemesisClient(
            self.history,
            self.user,
            hosts=self.hosts,
            reconnect=True,
            reconnect_max_delay=1.0,
            timeout=s.timeout,
            keepalive=s.keepalive,
            resume_from=since,
            rooms=bool(s.rooms),
        )

    def login(self, *, resume: bool, deadline: float | None = None) -> bool:
        """Log in (``resume``: from the cursor, else fresh), trying again until it works.
        Gives up when the traffic stops (during the run) or at ``deadline`` (history
        time, the final phase), or on ``abort``."""
        if self.client is not None:
            self.logout()
        since = self.cursor if resume else None
        op = self._next_op()
        attempt = 0
        while not self.abort.is_set():
            attempt += 1
            client = self._new_client(since)
            self.client = client
            self._op("invoke", "login", op, attempt=attempt, since=since)
            try:
                client.connect()
                result = client.login(self.user, PASSWORD)
            except ChatError as exc:
                refused = isinstance(exc, ServerError)
                code = exc.code if isinstance(exc, ServerError) else type(exc).__name__
                self._op("fail" if refused else "info", "login", op, attempt=attempt, error=code)
                # Closed first: until then its hooks may still get messages (a login that
                # timed out may be answered meanwhile), and the cursor moves past them.
                client.close(timeout=2.0)
                if client.cursor is not None:
                    since = client.cursor  # it got part of a replay: go on from there
                    self.cursor = since
                self.client = None
                over = self.stop.is_set() if deadline is None else self.history.now() > deadline
                if over or self.abort.wait(self.jitter.uniform(0.3, 1.5)):
                    return False
                continue
            self._op("ok", "login", op, attempt=attempt, seq=result.seq, since=since)
            return True
        return False

    def logout(self) -> None:
        client = self.client
        if client is None:
            return
        op = self._next_op()
        self._op("invoke", "logout", op)
        client.close(timeout=self.settings.timeout)
        if client.cursor is not None:
            self.cursor = client.cursor
        self._op("ok", "logout", op, seq=client.cursor)
        self.client = None

    # ------------------------------------------------------------------ sends

    def _pick_room(self) -> str | None:
        """A public message's room: lobby (None) half the time, else mostly a room the
        client is in; now and then any room (a non-member's send is refused, and that
        refusal is checked too)."""
        if not self.settings.rooms or self.rng.random() < 0.4:
            return None
        if self.rng.random() < 0.1:
            return self.rng.choice(self.settings.rooms)
        joined = sorted(r.name for r in self.client.rooms) if self.client is not None else []
        return self.rng.choice(joined) if joined else None

    def send(self, to: str | None, *, room: str | None = None) -> None:
        """A new public message (``to`` None; to ``room``, None for lobby) or DM,
        through the SDK's own call."""
        kind = "pm" if to is None else "dm"
        op = self._next_op()
        o = Outstanding(op, kind, self._text(op), to, None, 0, "", room=room)
        self._attempt_sdk(o, final=False)

    def resend(self, o: Outstanding, *, final: bool = False) -> bool:
        """Send ``o`` again with its cid (through the SDK's own call if it never got
        one); True once it is resolved: acked, or refused for good."""
        if o.cid is None:
            return self._attempt_sdk(o, final=final)
        client = self.client
        if client is None or client.closed:
            return False
        o.attempts += 1
        self._op(
            "invoke", o.kind, o.op, attempt=o.attempts, text=o.text, to=o.to, cid=o.cid, room=o.room
        )
        # A string id the SDK does not track: the reply is read from the tap.
        rid = f"r{o.op}.{o.attempts}"
        cmd: PmCommand | DmCommand
        if o.to is None:
            cmd = PmCommand(message=o.text, cid=o.cid, id=rid, room=o.room)
        else:
            cmd = DmCommand(to=o.to, message=o.text, cid=o.cid, id=rid)
        try:
            client.send_command(cmd)
        except (ChatError, UsageError) as exc:
            return self._outcome(o, "info", type(exc).__name__, final)
        reply = self.history.wait_reply(self.user, rid, self.settings.timeout)
        if reply is None:
            return self._outcome(o, "info", "timeout", final)
        if reply.get("type") == "ack":
            return self._acked(o, reply.get("seq"), bool(reply.get("queued")))
        return self._outcome(o, "fail", str(reply.get("code")), final)

    def _attempt_sdk(self, o: Outstanding, *, final: bool) -> bool:
        client = self.client
        if client is None or client.closed:
            if o not in self.unresolved:
                self.unresolved.append(o)
            return False
        o.attempts += 1
        self._op("invoke", o.kind, o.op, attempt=o.attempts, text=o.text, to=o.to, room=o.room)
        try:
            receipt = client.pm(o.text, room=o.room) if o.to is None else client.dm(o.to, o.text)
        except ServerError as exc:
            o.cid = self.history.cid_of(self.user, o.text)
            return self._outcome(o, "fail", exc.code, final)
        except (ChatError, UsageError) as exc:
            o.cid = self.history.cid_of(self.user, o.text)
            if o.cid is None:
                return self._outcome(o, "fail", "not_sent", final)  # never reached a socket
            return self._outcome(o, "info", type(exc).__name__, final)
        o.cid = self.history.cid_of(self.user, o.text)
        return self._acked(o, receipt.seq, receipt.queued)

    def _acked(self, o: Outstanding, seq: object, queued: bool) -> bool:
        self._op(
            "ok",
            o.kind,
            o.op,
            attempt=o.attempts,
            text=o.text,
            to=o.to,
            cid=o.cid,
            room=o.room,
            seq=seq if isinstance(seq, int) else None,
            queued=queued,
        )
        if o in self.unresolved:
            self.unresolved.remove(o)
        return True

    def _outcome(self, o: Outstanding, phase: str, error: str, final: bool) -> bool:
        """An attempt without an ack: refused for good, or to be sent again."""
        self._op(
            phase,
            o.kind,
            o.op,
            attempt=o.attempts,
            text=o.text,
            to=o.to,
            cid=o.cid,
            room=o.room,
            error=error,
        )
        o.error = error
        done = phase == "fail" and error not in RETRYABLE  # never to be delivered
        if not done and not final and o.attempts >= self.settings.max_attempts:
            self.errors.append(f"op {o.op}: gave up after {o.attempts} attempts ({error})")
            done = True
        if done:
            if o in self.unresolved:
                self.unresolved.remove(o)
            return True
        o.due = self.history.now() + self.jitter.uniform(*self.settings.retry_after)
        if o not in self.unresolved:
            self.unresolved.append(o)
        return False

    # ------------------------------------------------------------------ rooms

    def room_op(self, kind: str, room: str) -> bool:
        """Join or part ``room`` (the checker reads the seq from the reply's frame);
        True if the server answered it."""
        client = self.client
        if client is None or client.closed:
            return False
        op = self._next_op()
        self._op("invoke", kind, op, room=room)
        try:
            if kind == "join":
                client.join(room)
            else:
                client.part(room)
        except ServerError as exc:
            self._op("fail", kind, op, room=room, error=exc.code)
            return True
        except (ChatError, UsageError) as exc:
            self._op("info", kind, op, room=room, error=type(exc).__name__)
            return False
        self._op("ok", kind, op, room=room)
        return True

    def moderate(self) -> bool:
        """One moderation action on another user in a room, chosen by the user's seeded
        generator; bans and mutes now and then with an end (docs/PROTOCOL.md
        §Moderation). The checker learns a kick's or ban's seq from the ack (or the
        event): the named user is no longer a member from it on. True if answered."""
        client = self.client
        if client is None or client.closed:
            return False
        actions = self.settings.moderation
        action = self.rng.choices([k for k, _ in actions], [w for _, w in actions])[0]
        room = self.rng.choice(self.settings.rooms)
        whom = self.rng.choice([u for u in self.users if u != self.user])
        duration = self.rng.randint(2, 20) if self.rng.random() < 0.3 else None
        op = self._next_op()
        self._op("invoke", action, op, room=room, to=whom)
        try:
            if action == "kick":
                receipt = client.kick(room, whom, reason="nemesis")
            elif action == "ban":
                receipt = client.ban(room, whom, reason="nemesis", duration=duration)
            elif action == "mute":
                receipt = client.mute(room, whom, reason="nemesis", duration=duration)
            elif action == "unban":
                receipt = client.unban(room, whom)
            else:
                receipt = client.unmute(room, whom)
        except ServerError as exc:
            self._op("fail", action, op, room=room, to=whom, error=exc.code)
            return True
        except (ChatError, UsageError) as exc:
            self._op("info", action, op, room=room, to=whom, error=type(exc).__name__)
            return False
        self._op("ok", action, op, room=room, to=whom, seq=receipt.seq)
        return True

    # ------------------------------------------------------------------ reads

    def read_history(self) -> None:
        client = self.client
        assert client is not None
        op = self._next_op()
        with_user = self.rng.choice(self.users) if self.rng.random() < 0.5 else None
        top = self.history.top(self.user)
        before = self.rng.randint(1, top + 1) if top and self.rng.random() < 0.5 else None
        limit = self.rng.randint(1, 100)
        room = None
        if with_user is None and self.settings.rooms and self.rng.random() < 0.5:
            room = self.rng.choice(self.settings.rooms)
        self._op("invoke", "history", op, to=with_user, seq=before, room=room)
        try:
            page = client.history(before=before, limit=limit, with_user=with_user, room=room)
        except ServerError as exc:
            self._op("fail", "history", op, error=exc.code)
        except (ChatError, UsageError) as exc:
            self._op("info", "history", op, error=type(exc).__name__)
        else:
            self._op("ok", "history", op, to=with_user, seq=len(page.messages), room=room)

    def scan(self, partners: Sequence[str | None], rooms: Sequence[str] = ()) -> bool:
        """The final read: every page of lobby (``None``) or of the DM conversation
        with each partner, and of each of ``rooms``. True if every page was read."""
        client = self.client
        if client is None:
            return False
        op = self._next_op()
        self._op("invoke", "scan", op)
        try:
            for partner in partners:
                for _ in client.iter_history(with_user=partner, page=100):
                    pass
            for room in rooms:
                for _ in client.iter_history(room=room, page=100):
                    pass
        except (ChatError, UsageError) as exc:
            self._op("info", "scan", op, error=f"{type(exc).__name__}: {exc}")
            return False
        self._op("ok", "scan", op)
        return True

    # ------------------------------------------------------------------ the end

    def finish_sends(self, deadline: float) -> bool:
        """After the faults: log in if away, and send every open message again until it
        is acked or refused (or ``deadline``, history time). True if none is left."""
        while self.history.now() < deadline and not self.abort.is_set():
            if self.client is None or self.client.closed:
                self.login(resume=True, deadline=deadline)
                continue
            if not self.unresolved:
                return True
            if not self.resend(self.unresolved[0], final=True):
                self.abort.wait(0.5)
        return not self.unresolved and self.client is not None

    def close(self) -> None:
        with contextlib.suppress(ChatError, UsageError):
            self.logout()
