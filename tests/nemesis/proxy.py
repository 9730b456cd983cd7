"""TCP proxies on 127.0.0.1 that the harness owns and breaks: the network of a run.

Every path a fault can cut goes through one :class:`Link` of the :class:`Switchboard`:
each client reaches each node through a link, and each node reaches Redis and
PostgreSQL through a link of its own (node ``i`` knows only its links' ports). A link
is in one of three modes:

- ``up``: bytes flow both ways.
- ``down``: every connection open on it is reset (RST), and new ones are accepted and
  reset at once: what a host sees when the far side is gone.
- ``blackhole``: nothing moves in either direction and nothing new is accepted, but no
  connection is closed: a partition that drops packets. TCP's own buffers and the
  listener's backlog hold what was in flight; when the link is ``up`` again it all
  moves on, as retransmissions do when a partition heals.

:meth:`Switchboard.cut` resets every connection of a link at once (a network blip);
:meth:`Switchboard.cut_midframe` arms a link so that the next chunk carrying a message
frame is forwarded only up to a byte inside a frame, then both sides are reset: the
receiver holds half a frame.

Only loopback: links listen on 127.0.0.1 and connect to the upstream they were given,
which the harness only ever sets to its own processes on 127.0.0.1.

Threads: one thread (``nemesis-switchboard``) owns every socket and every buffer; the
public methods hand it a command through ``_commands`` (a queue) and a wake-up socket,
and wait (bounded) until it has run, so when ``cut()`` returns the cut has happened.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import selectors
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Link", "Switchboard"]

log = logging.getLogger(__name__)

BUFFER = 256 * 1024  # bytes held per direction before the proxy stops reading
# A chunk worth cutting in the middle: it carries a message, an ack or a login.
_DOWN_MARKS = (b'"ack"', b'"broadcast"', b'"dm"', b'"replay_done"', b'"login_ok"')
_UP_MARKS = (b'"pm"', b'"dm"', b'"login"')

MODES = ("up", "down", "blackhole")


@dataclass(eq=False)
class _Pair:
    """One proxied connection: ``down`` is the accepted side, ``up`` the upstream."""

    link: Link
    down: socket.socket
    up: socket.socket
    to_up: bytearray = field(default_factory=bytearray)
    to_down: bytearray = field(default_factory=bytearray)
    masks: dict[socket.socket, int] = field(default_factory=dict)
    closed: bool = False


@dataclass(eq=False)
class Link:
    """A listening port on 127.0.0.1 forwarding to ``upstream`` (see the module)."""

    name: str
    listener: socket.socket
    upstream: tuple[str, int]
    mode: str = "up"
    pairs: list[_Pair] = field(default_factory=list)
    midframe_down: int = 0  # cuts armed in the server-to-client direction
    midframe_up: int = 0
    accepted: int = 0
    cuts: int = 0
    listening: bool = False

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.listener.getsockname()[:2]
        return str(host), int(port)

    @property
    def hostport(self) -> str:
        return "{}:{}".format(*self.address)


_WAKE = object()


class Switchboard:
    """Every link of a run, served by one thread (see the module docstring)."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random(0)  # the loop thread's: where cuts fall
        self._sel = selectors.DefaultSelector()
        self._links: dict[str, Link] = {}  # the loop thread's; add() before start only
        self._commands: queue.SimpleQueue[tuple[Callable[[], object], threading.Event]] = (
            queue.SimpleQueue()
        )
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, _WAKE)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="nemesis-switchboard", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the API

    def add(self, name: str, upstream: tuple[str, int], port: int = 0) -> Link:
        """A new link listening on 127.0.0.1:``port`` (0: a free one)."""
        if upstream[0] not in ("127.0.0.1", "localhost"):
            raise ValueError(f"links only reach loopback, not {upstream[0]}")
        listener = socket.create_server(("127.0.0.1", port), backlog=128)
        listener.setblocking(False)
        link = Link(name, listener, upstream)

        def register() -> None:
            self._links[name] = link
            self._listen(link, True)

        self._run(register)
        return link

    def link(self, name: str) -> Link:
        return self._links[name]

    def set_mode(self, name: str, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self._run(lambda: self._set_mode(self._links[name], mode))

    def cut(self, name: str) -> int:
        """Reset every connection open on the link now; how many there were."""
        box: list[int] = []
        self._run(lambda: box.append(self._cut(self._links[name])))
        return box[0] if box else 0

    def cut_midframe(self, name: str, direction: str = "down", count: int = 1) -> None:
        """Cut the next ``count`` message-carrying chunks in ``direction`` (``down``:
        server to client; ``up``: client to server) inside a frame."""

        def arm() -> None:
            link = self._links[name]
            if direction == "down":
                link.midframe_down += count
            else:
                link.midframe_up += count

        self._run(arm)

    def disarm(self, name: str) -> None:
        def clear() -> None:
            link = self._links[name]
            link.midframe_down = link.midframe_up = 0

        self._run(clear)

    def retarget(self, name: str, upstream: tuple[str, int]) -> None:
        """New connections go to ``upstream`` (a node restarted on another port)."""

        def set_upstream() -> None:
            self._links[name].upstream = upstream

        self._run(set_upstream)

    def close(self) -> None:
        if self._stop.is_set():
            return

        def shut() -> None:
            for link in self._links.values():
                self._cut(link)
                self._listen(link, False)
                link.listener.close()
            self._stop.set()

        self._run(shut)
        self._thread.join(5)
        if self._thread.is_alive():
            log.error("the switchboard thread did not end")
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()

    def _run(self, fn: Callable[[], object], timeout: float = 10.0) -> None:
        """Run ``fn`` on the loop thread and wait until it has."""
        if threading.current_thread() is self._thread:
            fn()
            return
        done = threading.Event()
        self._commands.put((fn, done))
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if not done.wait(timeout):
            raise TimeoutError("the switchboard did not run a command in time")

    # ------------------------------------------------------------------ the loop thread

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                ready = self._sel.select(timeout=1.0)
            except OSError as exc:  # a socket closed under select: go round again
                log.debug("select: %s", exc)
                continue
            for key, mask in ready:
                data = key.data
                try:
                    if data is _WAKE:
                        self._commands_now()
                    elif isinstance(data, Link):
                        self._accept(data)
                    else:
                        pair, sock = data
                        self._io(pair, sock, mask)
                except OSError as exc:
                    log.debug("switchboard: %s", exc)
                if self._stop.is_set():
                    break
        # Commands that arrived as it stopped: run them so nobody waits in vain.
        self._commands_now()

    def _commands_now(self) -> None:
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass
        while True:
            try:
                fn, done = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                fn()
            except Exception:
                log.exception("switchboard command failed")
            finally:
                done.set()

    def _listen(self, link: Link, on: bool) -> None:
        if on and not link.listening:
            self._sel.register(link.listener, selectors.EVENT_READ, link)
            link.listening = True
        elif not on and link.listening:
            self._sel.unregister(link.listener)
            link.listening = False

    def _set_mode(self, link: Link, mode: str) -> None:
        link.mode = mode
        if mode == "down":
            self._cut(link)
        # A blackhole takes nobody new: connects wait in the listener's backlog.
        self._listen(link, mode != "blackhole")
        for pair in list(link.pairs):
            self._interest(pair)

    def _accept(self, link: Link) -> None:
        try:
            down, _ = link.listener.accept()
        except BlockingIOError:
            return
        if link.mode == "down":
            _reset(down)
            return
        try:
            # Loopback: a live upstream answers at once, a dead one refuses at once.
            up = socket.create_connection(link.upstream, timeout=1.0)
        except OSError:
            _reset(down)
            return
        link.accepted += 1
        for s in (down, up):
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pair = _Pair(link, down, up)
        link.pairs.append(pair)
        self._interest(pair)

    def _io(self, pair: _Pair, sock: socket.socket, mask: int) -> None:
        if pair.closed:
            return
        link = pair.link
        if mask & selectors.EVENT_READ and link.mode == "up":
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                self._close_pair(pair, reset=True)
                return
            if data == b"":
                # EOF: pass it on once what is buffered is written (a half-close).
                self._close_pair(pair, reset=False)
                return
            if data:
                downstream = sock is pair.up
                if not self._maybe_cut(pair, data, downstream):
                    (pair.to_down if downstream else pair.to_up).extend(data)
        if pair.closed:
            return
        for target, buf in ((pair.down, pair.to_down), (pair.up, pair.to_up)):
            if buf and link.mode == "up":
                try:
                    sent = target.send(buf)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except OSError:
                    self._close_pair(pair, reset=True)
                    return
                del buf[:sent]
        self._interest(pair)

    def _maybe_cut(self, pair: _Pair, data: bytes, downstream: bool) -> bool:
        """A mid-frame cut, if one is armed and ``data`` is worth it: forward a prefix
        that ends inside a frame, then reset both sides. True if it cut."""
        link = pair.link
        armed = link.midframe_down if downstream else link.midframe_up
        marks = _DOWN_MARKS if downstream else _UP_MARKS
        if not armed or not any(m in data for m in marks):
            return False
        # Positions k where data[:k] ends inside a frame (not just after a newline).
        inside = [k for k in range(1, len(data)) if data[k - 1] != 0x0A]
        if not inside:
            return False
        k = self._rng.choice(inside)
        if downstream:
            link.midframe_down -= 1
        else:
            link.midframe_up -= 1
        target, buf = (pair.down, pair.to_down) if downstream else (pair.up, pair.to_up)
        buf.extend(data[:k])
        with contextlib.suppress(OSError):
            target.setblocking(True)
            target.settimeout(0.5)
            target.sendall(buf)  # loopback: what is buffered goes at once
        buf.clear()
        link.cuts += 1
        self._close_pair(pair, reset=True)
        return True

    def _interest(self, pair: _Pair) -> None:
        if pair.closed:
            return
        flowing = pair.link.mode == "up"
        for sock, inbound, outbound in (
            (pair.down, pair.to_up, pair.to_down),
            (pair.up, pair.to_down, pair.to_up),
        ):
            mask = 0
            if flowing:
                if len(inbound) < BUFFER:
                    mask |= selectors.EVENT_READ
                if outbound:
                    mask |= selectors.EVENT_WRITE
            old = pair.masks.get(sock, 0)
            if mask == old:
                continue
            if old == 0:
                self._sel.register(sock, mask, (pair, sock))
            elif mask == 0:
                self._sel.unregister(sock)
            else:
                self._sel.modify(sock, mask, (pair, sock))
            pair.masks[sock] = mask

    def _cut(self, link: Link) -> int:
        pairs, link.pairs = link.pairs, []
        for pair in pairs:
            self._close_pair(pair, reset=True)
        link.cuts += len(pairs)
        return len(pairs)

    def _close_pair(self, pair: _Pair, *, reset: bool) -> None:
        if pair.closed:
            return
        pair.closed = True
        for sock in (pair.down, pair.up):
            if pair.masks.get(sock):
                with contextlib.suppress(KeyError, ValueError):
                    self._sel.unregister(sock)
        if not reset:
            # An orderly end: flush what is buffered (bounded), then FIN both ways.
            for target, buf in ((pair.down, pair.to_down), (pair.up, pair.to_up)):
                if buf:
                    with contextlib.suppress(OSError):
                        target.setblocking(True)
                        target.settimeout(0.5)
                        target.sendall(buf)
        for sock in (pair.down, pair.up):
            if reset:
                _reset(sock)
            else:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
        with contextlib.suppress(ValueError):
            pair.link.pairs.remove(pair)


def _reset(sock: socket.socket) -> None:
    """Close with an RST, as a peer that vanished does."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
