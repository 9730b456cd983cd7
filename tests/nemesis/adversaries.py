"""Three clients of the run that no user would write (docs/RELIABILITY.md, "Adversaries").

:class:`NeverReader` logs in, then never reads again while it keeps asking for pages
of ``lobby``'s history, the busiest room there is: its output piles up on the server,
which must bound it (docs/PROTOCOL.md §Limits: 1 MiB, or 10 s without progress, then
the connection is closed) without holding up anyone else. Each of its connections is
an ``Op`` ``never_read``: ``ok`` when the server closed it, ``info`` when the run ended
first (with what was still unread).

:class:`Vandal` sends hostile and oversized frames (not JSON, not UTF-8, wrong types,
a message over the limit, a frame over ``max_frame``, commands it may not make, names
that break the rules), before and after its login, each as an ``Op`` ``hostile``: ``ok``
when it was answered with an ``error`` of a code its case allows (docs/PROTOCOL.md
§Errors), ``fail`` when it was answered otherwise (accepted, or the wrong code: the
checker's ``hostile_answer``), ``info`` when no answer came (a fault on the way).

:class:`Pipeliner` logs in, as a returning user, with a ping and half of another in
the same packet, and some of its logins resume: the server runs such a login on its
admission thread and parks the connection, threadless, until its client speaks
(chatroom_server.firstlook ``FirstLook.first``). Its login is answered first, then its
replay (``replay_done``), then its ping; then it sends the rest of the half frame, whose
ping is answered; then it waits, parked, 0.2 to 3 s, and pings once more. Each
connection is an ``Op`` ``pipeline``.

None speaks through the switchboard: they connect to the nodes themselves, so that
what holds them up is the server's, not a proxy's. Their frames are not in the
history (the checker holds the users to what the wire brought them; these three are
judged by their ``Op``\\ s), and none stores a message: anything of theirs that
reached a user would be a ``phantom``.

Threads: each runs on its own thread and owns its socket; ``stop`` (an Event) ends it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tests.nemesis.history import History, Op

__all__ = ["NeverReader", "Pipeliner", "Vandal", "hostile_cases"]

log = logging.getLogger(__name__)

PASSWORD = "nemesis adversary"


@dataclass(frozen=True)
class Case:
    """One hostile frame: the bytes (``{id}`` replaced by its request id), the error
    codes docs/PROTOCOL.md allows for it, whether the server then closes the
    connection, and whether it is sent after the login."""

    name: str
    frame: bytes
    codes: frozenset[str]
    after_login: bool
    closes: bool = False
    has_id: bool = True


def _c(name: str, frame: str | bytes, codes: str, after_login: bool, **kw: Any) -> Case:
    raw = frame.encode() if isinstance(frame, str) else frame
    allowed = set(codes.split())
    # Flood control may refuse any frame instead (§Flood control): not carried out. And
    # one the server must look something up for (an account, a room) may find the
    # database unreachable (a partition, PostgreSQL down): `unavailable` (§Errors).
    if after_login and allowed - SYNTAX - {"too_large", "invalid_room"}:
        allowed.add("unavailable")
    allowed.add("rate_limited")
    return Case(name, raw, frozenset(allowed), after_login, **kw)


# The codes of a frame refused for what it says alone, with nothing looked up.
SYNTAX = frozenset({"bad_request", "bad_json", "unknown_command", "already_logged_in"})


def hostile_cases(rooms: Sequence[str], max_frame: int = 65536) -> list[Case]:
    """Every hostile frame the vandal knows; ``rooms`` are the run's rooms (which the
    vandal is not in). None of them may be stored: each is refused with an error."""
    room = rooms[0] if rooms else "dev"
    long_text = "x" * 4001  # §Limits: 4,000 characters, rejected, never truncated
    nested = "[" * 2000 + "]" * 2000
    return [
        # Before the login (§Errors: not_logged_in, bad_json; §Names and passwords).
        _c("not json", b"{not json", "bad_json", False, has_id=False),
        _c("a JSON array", b"[1, 2, 3]", "bad_json", False, has_id=False),
        _c(
            "not UTF-8",
            b'{"command": "pm", "message": "\xff\xfe"}',
            "bad_json",
            False,
            has_id=False,
        ),
        _c(
            "pm before login",
            '{"command": "pm", "message": "x", "id": {id}}',
            "not_logged_in",
            False,
        ),
        _c(
            "bad username",
            '{"command": "login", "username": "no such name!", "password": "12345678", "id": {id}}',
            "invalid_username",
            False,
        ),
        # After it.
        _c("unknown command", '{"command": "explode", "id": {id}}', "unknown_command", True),
        _c("pm without message", '{"command": "pm", "id": {id}}', "bad_request", True),
        _c("pm empty", '{"command": "pm", "message": "", "id": {id}}', "bad_request", True),
        _c("pm blank", '{"command": "pm", "message": "   ", "id": {id}}', "bad_request", True),
        _c("pm a number", '{"command": "pm", "message": 42, "id": {id}}', "bad_request", True),
        _c(
            "pm over the limit",
            '{"command": "pm", "message": "' + long_text + '", "id": {id}}',
            "bad_request",
            True,
        ),
        _c(
            "pm nested deep",
            '{"command": "pm", "message": ' + nested + ', "id": {id}}',
            "bad_request bad_json",
            True,
            has_id=False,
        ),
        _c(
            "pm room a number",
            '{"command": "pm", "message": "x", "room": 7, "id": {id}}',
            "bad_request",
            True,
        ),
        _c(
            "pm to a room not joined",
            '{"command": "pm", "message": "x", "room": "' + room + '", "id": {id}}',
            "not_in_room",
            True,
        ),
        _c(
            "pm to no room",
            '{"command": "pm", "message": "x", "room": "nosuchroom7", "id": {id}}',
            "no_such_room",
            True,
        ),
        _c(
            "dm to nobody",
            '{"command": "dm", "to": "nobodyatall7", "message": "x", "id": {id}}',
            "unknown_user",
            True,
        ),
        _c("dm without to", '{"command": "dm", "message": "x", "id": {id}}', "bad_request", True),
        _c(
            "dm to a bad name",
            '{"command": "dm", "to": "a b", "message": "x", "id": {id}}',
            "bad_request invalid_username unknown_user",
            True,
        ),
        _c(
            "history limit",
            '{"command": "history", "limit": 1000, "id": {id}}',
            "bad_request",
            True,
        ),
        _c(
            "history before -5",
            '{"command": "history", "before": -5, "id": {id}}',
            "bad_request",
            True,
        ),
        _c(
            "history before 2^70",
            '{"command": "history", "before": 1180591620717411303424, "id": {id}}',
            "bad_request",
            True,
        ),
        _c(
            "history of a room not joined",
            '{"command": "history", "room": "' + room + '", "id": {id}}',
            "not_in_room",
            True,
        ),
        _c(
            "login again",
            '{"command": "login", "username": "vandal", "password": "'
            + PASSWORD
            + '", "id": {id}}',
            "already_logged_in",
            True,
        ),
        _c(
            "join a bad name",
            '{"command": "join", "room": "#no good", "id": {id}}',
            "invalid_room",
            True,
        ),
        _c("part lobby", '{"command": "part", "room": "lobby", "id": {id}}', "bad_request", True),
        _c(
            "kick in lobby",
            '{"command": "kick", "room": "lobby", "user": "ada", "id": {id}}',
            "not_operator bad_request",
            True,
        ),
        _c(
            "kick as nobody",
            '{"command": "kick", "room": "' + room + '", "user": "ada", "id": {id}}',
            "not_operator not_in_room",
            True,
        ),
        _c(
            "ban for -1 s",
            '{"command": "ban", "room": "' + room + '", "user": "ada", "duration": -1, "id": {id}}',
            "bad_request not_operator not_in_room",
            True,
        ),
        _c(
            "mute oneself",
            '{"command": "mute", "room": "' + room + '", "user": "vandal", "id": {id}}',
            "bad_request not_operator not_in_room",
            True,
        ),
        _c(
            "mode nonsense",
            '{"command": "mode", "room": "' + room + '", "modes": "+zq", "id": {id}}',
            "bad_request not_operator not_in_room",
            True,
        ),
        _c(
            "frame over max_frame",
            b'{"command": "pm", "message": "' + b"y" * (max_frame + 16) + b'"}',
            "too_large",
            True,
            closes=True,
            has_id=False,
        ),
    ]


def _connect(address: tuple[str, int], timeout: float, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        # Before connect(): the window it advertises is then small from the start.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    try:
        sock.connect(address)
    except OSError:
        sock.close()
        raise
    return sock


class _Lines:
    """Whole lines from a socket, read with its timeout."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def next(self, deadline: float) -> dict[str, Any] | None:
        """The next frame as a dict (None at the deadline, or at the end of stream)."""
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return None
            if not data:
                raise ConnectionResetError("end of stream")
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        try:
            value = json.loads(line)
        except ValueError:
            return {"type": "unreadable"}
        return value if isinstance(value, dict) else {"type": "unreadable"}


def _login(lines: _Lines, user: str, rooms: bool, timeout: float) -> dict[str, Any]:
    frame: dict[str, Any] = {"command": "login", "username": user, "password": PASSWORD, "id": 0}
    if rooms:
        frame["features"] = ["rooms"]
    lines.sock.sendall(json.dumps(frame).encode() + b"\n")
    deadline = time.monotonic() + timeout
    while True:
        reply = lines.next(deadline)
        if reply is None:
            raise TimeoutError("no answer to the login")
        if reply.get("id") == 0:
            if reply.get("type") != "login_ok":
                raise ConnectionError(f"login refused: {reply.get('code')}")
            return reply


class _Adversary:
    kind = "adversary"

    def __init__(
        self, user: str, addresses: Sequence[tuple[str, int]], history: History, seed: int
    ) -> None:
        self.user = user
        self.addresses = list(addresses)
        self.history = history
        self.rng = random.Random(f"{seed}/{user}")
        self.stop = threading.Event()
        self.ops = 0
        self.errors: list[str] = []  # the thread's own failures, read once it has ended
        self.thread = threading.Thread(target=self._main, name=f"nemesis-{user}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _op(self, phase: str, op: int, **fields: Any) -> None:
        h = self.history
        h.add(Op(t=h.now(), user=self.user, client=0, op=op, phase=phase, kind=self.kind, **fields))

    def round(self, address: tuple[str, int]) -> None:
        """One connection to ``address``, from its opening to its end."""
        raise NotImplementedError

    def _main(self) -> None:
        try:
            while not self.stop.is_set():
                self.round(self.rng.choice(self.addresses))
        except Exception as exc:  # a bug of the harness: the run reports it
            log.exception("%s failed", self.user)
            self.errors.append(f"{type(exc).__name__}: {exc}")


class NeverReader(_Adversary):
    """See the module docstring. ``pace``: seconds between its history requests (under
    the flood control's 10 a second)."""

    kind = "never_read"

    def __init__(self, *args: Any, pace: float = 0.2, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pace = pace

    def round(self, address: tuple[str, int]) -> None:
        self.ops += 1
        op = self.ops
        try:
            sock = _connect(address, 5.0, rcvbuf=4096)
        except OSError:
            self.stop.wait(1.0)
            return
        try:
            try:
                _login(_Lines(sock), self.user, False, 10.0)
            except (OSError, ConnectionError):
                self.stop.wait(1.0)
                return
            began = self.history.now()
            self._op("invoke", op, to=f"{address[0]}:{address[1]}")
            asked = 0
            # From here on nothing is read: each request's page waits on the server.
            while not self.stop.wait(self.pace):
                frame = {"command": "history", "limit": 100, "id": asked + 1}
                try:
                    sock.settimeout(5.0)
                    sock.sendall(json.dumps(frame).encode() + b"\n")
                except TimeoutError:
                    continue  # the server reads no more of it for now: still open
                except OSError as exc:
                    seconds = self.history.now() - began
                    self._op(
                        "ok",
                        op,
                        seq=asked,
                        error=f"closed by the server after {seconds:.1f} s: {type(exc).__name__}",
                    )
                    return
                asked += 1
            self._op("info", op, seq=asked, error=f"open at the end, {_drain(sock)}")
        finally:
            sock.close()


def _drain(sock: socket.socket) -> str:
    """What was still to read, and whether the server had closed the connection."""
    total = 0
    deadline = time.monotonic() + 5.0
    with contextlib.suppress(OSError):
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(min(2.0, left))
            data = sock.recv(1 << 20)
            if not data:
                return f"{total} bytes unread, then closed"
            total += len(data)
    return f"{total} bytes unread (or more)"


class Vandal(_Adversary):
    """See the module docstring. ``pace``: seconds between its frames."""

    kind = "hostile"

    def __init__(
        self, *args: Any, rooms: Sequence[str] = (), pace: float = 0.3, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.cases = hostile_cases(rooms)
        self.pace = pace
        self.rid = 0

    def round(self, address: tuple[str, int]) -> None:
        try:
            sock = _connect(address, 5.0)
        except OSError:
            self.stop.wait(1.0)
            return
        lines = _Lines(sock)
        try:
            before = [c for c in self.cases if not c.after_login]
            after = [c for c in self.cases if c.after_login and not c.closes]
            closing = [c for c in self.cases if c.closes]
            self.rng.shuffle(before)
            self.rng.shuffle(after)
            for case in before[: self.rng.randint(1, len(before))]:
                if self.stop.wait(self.pace) or not self.one(lines, case):
                    return
            try:
                _login(lines, self.user, True, 10.0)
            except (OSError, ConnectionError):
                self.stop.wait(1.0)
                return
            for k, case in enumerate(after):
                if k % 3 == 2 and not self.ping(lines):
                    return  # an accepted frame: the run of protocol errors starts again
                if self.stop.wait(self.pace) or not self.one(lines, case):
                    return
            if not self.stop.wait(self.pace):
                self.one(lines, self.rng.choice(closing))
        finally:
            sock.close()

    def ping(self, lines: _Lines) -> bool:
        self.rid += 1
        rid = f"k{self.rid}"
        try:
            lines.sock.sendall(json.dumps({"command": "ping", "id": rid}).encode() + b"\n")
            deadline = time.monotonic() + 5.0
            while (reply := lines.next(deadline)) is not None:
                if reply.get("id") == rid:
                    return True
        except OSError:
            return False
        return False

    def one(self, lines: _Lines, case: Case) -> bool:
        """Send ``case`` and judge its answer; False if the connection is done."""
        self.ops += 1
        op = self.ops
        self.rid += 1
        rid = self.rid
        frame = case.frame.replace(b"{id}", str(rid).encode()) + b"\n"
        self._op("invoke", op, text=case.name)
        try:
            lines.sock.sendall(frame)
            deadline = time.monotonic() + 10.0
            while True:
                reply = lines.next(deadline)
                if reply is None:
                    self._op("info", op, text=case.name, error="no answer")
                    return False
                # A case without a readable id is answered by an error without one;
                # pushes (users, broadcasts) have no id either and are let go.
                if case.has_id and reply.get("id") == rid:
                    break
                if not case.has_id and reply.get("type") == "error" and "id" not in reply:
                    break
        except OSError as exc:
            self._op("info", op, text=case.name, error=f"connection lost: {type(exc).__name__}")
            return False
        code = reply.get("code")
        clear = isinstance(reply.get("message"), str) and bool(reply.get("message"))
        if reply.get("type") == "error" and code in case.codes and clear:
            closed = case.closes and _closed(lines)
            if case.closes and not closed:
                self._op("fail", op, text=case.name, error=f"{code}, connection left open")
                return False
            self._op("ok", op, text=case.name, error=str(code))
            return not case.closes
        what = f"{reply.get('type')} {code or ''}".strip()
        allowed = "/".join(sorted(case.codes))
        self._op("fail", op, text=case.name, error=f"answered {what}, not {allowed}")
        return True


def _closed(lines: _Lines) -> bool:
    """Whether the server closes the connection within a few seconds (frames before
    the end, a ``bye`` say, are read and let go)."""
    deadline = time.monotonic() + 5.0
    try:
        while lines.next(deadline) is not None:
            pass
    except OSError:
        return True
    return False


class Pipeliner(_Adversary):
    """See the module docstring. Each round is one connection and one ``Op``
    ``pipeline``: ``ok`` when every request was answered once and in order, ``fail``
    when an answer came out of order, twice, or not at all while the connection stayed
    open, ``info`` when the connection ended first or the login was refused (a fault's
    ``unavailable``). ``wait``: the longest an answer may take (a paused server's)."""

    kind = "pipeline"

    def __init__(self, *args: Any, wait: float = 30.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wait = wait
        self.since: int | None = None  # the last login_ok's seq: a resume's since
        self.epoch: str | None = None

    def round(self, address: tuple[str, int]) -> None:
        self.ops += 1
        op = self.ops
        try:
            sock = _connect(address, 5.0)
        except OSError:
            self.stop.wait(1.0)
            return
        login: dict[str, Any] = {
            "command": "login",
            "username": self.user,
            "password": PASSWORD,
            "id": "login",
        }
        resume = self.since is not None and self.rng.random() < 0.4
        if resume:
            login.update(since=self.since, epoch=self.epoch)
        ping = b'{"command": "ping", "id": "b"}\n'
        cut = self.rng.randint(1, len(ping) - 2)
        # One packet: the login, a request after it, and half of another (FirstLook.first
        # runs the login and leaves the rest to the connection's thread).
        packet = json.dumps(login).encode() + b'\n{"command": "ping", "id": "a"}\n' + ping[:cut]
        text = f"{'resume, ' if resume else ''}cut at {cut}"
        self._op("invoke", op, text=text)
        lines = _Lines(sock)
        try:
            sock.sendall(packet)
            expect = ["login", "replay_done", "a"] if resume else ["login", "a"]
            ok = self._answers(lines, expect, op, text)
            if ok is None:
                return
            if ok.get("type") != "login_ok":
                self._op("info", op, text=text, error=f"login refused: {ok.get('code')}")
                self.stop.wait(1.0)  # a fault's unavailable: not a login a millisecond
                return
            self.since, self.epoch = ok.get("seq"), ok.get("epoch")
            sock.sendall(ping[cut:])
            if self._answers(lines, ["b"], op, text) is None:
                return
            # Parked again (nothing left to read): its thread starts when it speaks.
            if self.stop.wait(self.rng.uniform(0.2, 3.0)):
                self._op("info", op, text=text, error="the run ended")
                return
            sock.sendall(b'{"command": "ping", "id": "c"}\n')
            if self._answers(lines, ["c"], op, text) is not None:
                self._op("ok", op, text=text)
        except OSError as exc:
            self._op("info", op, text=text, error=f"connection lost: {type(exc).__name__}")
        finally:
            sock.close()

    def _answers(
        self, lines: _Lines, expect: list[str], op: int, text: str
    ) -> dict[str, Any] | None:
        """Read until each of ``expect`` (request ids, or ``replay_done``) is answered,
        in that order: the login's answer (empty if not asked for), or None when the
        round is over (its ``Op`` resolved). Frames without an id (pushes, replayed
        messages) are let go; a refused login ends the reading, nothing more is owed."""
        deadline = time.monotonic() + self.wait
        answer: dict[str, Any] = {}
        for want in expect:
            while True:
                reply = lines.next(deadline)
                if reply is None:
                    why = f"no answer to {want} in {self.wait:g} s, connection open"
                    self._op("fail", op, text=text, error=why)
                    return None
                got = "replay_done" if reply.get("type") == "replay_done" else reply.get("id")
                if got == want:
                    break
                if got is not None:
                    self._op("fail", op, text=text, error=f"{got} answered before {want}")
                    return None
            if want == "login":
                answer = reply
                if reply.get("type") != "login_ok":
                    return answer
        return answer
