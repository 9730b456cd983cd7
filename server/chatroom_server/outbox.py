"""Outbound delivery: a bounded buffer per connection and one flusher thread for all.

Why this shape (docs/PERFORMANCE.md, "Anchors" and "Design notes"): handing every frame
to a writer thread through a queue costs a thread wake-up per recipient per message,
which in CPython is far dearer than the ``send`` syscall itself. So:

- The thread that produced a frame writes it straight to the socket with a non-blocking
  ``send`` (``MSG_DONTWAIT``; the socket itself stays blocking for its reader thread).
- Only what the kernel did not take goes into the connection's ``bytearray`` backlog, and
  the connection is registered with the one :class:`Flusher` thread, which waits on epoll
  and drains every backlogged socket. While a backlog exists, new frames append to it, so
  a busy connection gets many frames per syscall and frame order is kept.
- Publications made under a lock write in two passes (:meth:`Outbox.queue` to every
  recipient under it, then :meth:`Outbox.push` to each after letting go); the fan-out,
  which holds no other lock, does both at once (:meth:`Outbox.offer`). None of these
  ever waits for another thread: ``queue`` appends to a list without the lock, and
  ``push`` and ``offer`` only *try* the lock; if another thread holds it, that thread
  sends the frames when it lets go (see :meth:`Outbox.push`). With ten threads fanning
  out to the same 99 sockets, waiting for each other's ``send`` on the outbox locks was
  where the time went: each wait is a futex sleep, a wake-up and a GIL hand-back
  (docs/PERFORMANCE.md).
- A backlog over the limit (default 1 MiB), or one that makes no progress for
  ``stall_timeout`` seconds, disconnects that client. Nobody else waits for it: a send
  never blocks.
- A replay (docs/PROTOCOL.md §Resume) is the one writer that waits, and only for its own
  connection: its reader thread :meth:`Outbox.hold` s live frames back, writes the replay
  a page at a time ahead of them (:meth:`Outbox.replay`), waiting before each page until
  the last is written (:meth:`Outbox.wait_drained`: the ``_drained`` condition, notified
  at every write of the backlog and when the connection ends), then
  :meth:`Outbox.release` s them. So a replay holds a page here, whatever its length.

Threading: each :class:`Outbox` has one lock (``_lock``) guarding its buffer, its state
flags and the socket's file descriptor (the fd is only closed under it, so no thread can
ever write to a reused fd number). ``_pending`` is the exception: a list that any
thread appends to without the lock and only lock holders take from, by copying it and
deleting the copied prefix (each one C call under the GIL, so an append between them
stays, after the rest); whoever releases the lock looks at it afterwards
(``_unlocked``), so nothing appended stays there. A list, not a deque: an empty deque
is 760 bytes, an empty list 56, and every idle connection has one (memory per
connection, docs/PERFORMANCE.md). The
flusher's ``_watched`` map is written only under the lock of the outbox it names and
read by the flusher thread (dict get/set are atomic).
No user code runs under any of these locks; the only I/O under them is non-blocking.
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable

from chatroom.tls import TlsWriter, tcp_shutdown, tls_recv

log = logging.getLogger(__name__)

_DONTWAIT = socket.MSG_DONTWAIT
_EPOLLOUT = select.EPOLLOUT


def push_all(outboxes: Iterable[Outbox]) -> None:
    """:meth:`Outbox.push` each: the second half of a publication whose frames were
    queued under some lock, sent after it is let go. Each ``send`` releases the GIL, and
    under a lock every other thread that wants the lock waits behind all of them."""
    for ob in outboxes:
        ob.push()


class Flusher:
    """One thread that drains the backlog of every connection that has one."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._epoll = select.epoll()
        self._watched: dict[int, Outbox] = {}  # fd -> outbox with a backlog; see module doc
        self._stop = threading.Event()
        self._clock = clock
        # stop() writes a byte here so the thread leaves epoll.poll() at once.
        self._wake_r, self._wake_w = socket.socketpair()
        self._epoll.register(self._wake_r.fileno(), select.EPOLLIN)
        self._thread = threading.Thread(target=self._run, name="chat-flusher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._wake_w.send(b"x")
        if self._thread.ident is not None:
            self._thread.join(timeout)
        self._epoll.close()
        self._wake_r.close()
        self._wake_w.close()

    # Called with the outbox's lock held.
    def _watch(self, ob: Outbox) -> None:
        self._watched[ob.fd] = ob
        try:
            self._epoll.register(ob.fd, _EPOLLOUT)
        except FileExistsError:
            self._epoll.modify(ob.fd, _EPOLLOUT)

    # Called with the outbox's lock held.
    def _unwatch(self, ob: Outbox) -> None:
        try:
            self._epoll.unregister(ob.fd)
        except (FileNotFoundError, ValueError, OSError):
            pass  # already gone: the epoll was closed at shutdown
        if self._watched.get(ob.fd) is ob:
            del self._watched[ob.fd]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                events = self._epoll.poll(0.5)
            except OSError:
                if self._stop.is_set():
                    return
                raise
            for fd, _ in events:
                ob = self._watched.get(fd)
                if ob is not None:
                    ob._flush()


class Outbox:
    """The outbound side of one connection. ``send`` is safe from any thread."""

    __slots__ = (
        "_accepting",
        "_buf",
        "_drained",
        "_extra",
        "_flusher",
        "_held",
        "_lock",
        "_open",
        "_pending",
        "_progress_at",
        "_sock",
        "_tls_writer",
        "_watching",
        "fd",
        "limit",
        "name",
        "on_drop",
        "stall_timeout",
        "tls",
    )

    def __init__(
        self,
        sock: socket.socket,
        flusher: Flusher,
        *,
        limit: int = 1024 * 1024,
        stall_timeout: float = 10.0,
        name: str = "",
    ) -> None:
        self._sock = sock
        # TLS: the socket is non-blocking and every use of the SSL object, the reader's
        # recv included (see recv_tls), happens under _lock: OpenSSL forbids concurrent use.
        self.tls = isinstance(sock, ssl.SSLSocket)
        self._tls_writer = TlsWriter()  # TLS: OpenSSL's retry rule (chatroom.tls)
        self.fd = sock.fileno()
        self._flusher = flusher
        self.limit = limit
        self.stall_timeout = stall_timeout
        self.name = name
        self._lock = threading.Lock()
        # Made by close() when it must wait for the backlog: a Condition carries a deque
        # of its own (~0.6 KiB), and most connections never linger (memory per idle
        # connection, docs/PERFORMANCE.md).
        self._drained: threading.Condition | None = None
        self._buf = bytearray()
        self._pending: list[bytes] = []  # see the module docstring
        self._accepting = True  # False once closing: later frames are dropped
        self._open = True  # False once the fd is closed
        self._watching = False
        self._progress_at = 0.0
        # Between hold() and release(): frames sent meanwhile (docs/PROTOCOL.md §Resume:
        # live traffic waits behind the replay). None: not holding.
        self._held: bytearray | None = None
        # Bytes of a released replay not yet written (replay_unwritten): allowed on top
        # of the limit, so the end of a replay is not mistaken for a slow consumer.
        self._extra = 0
        # Called (without the lock) with a reason when the outbox drops the connection.
        self.on_drop: Callable[[str], None] | None = None

    @property
    def renders(self) -> bool:
        """The transport renders the server's events rather than sending its JSON frames
        (IRC's subclass): the fan-out then hands it frames that carry their events
        (chatroom_server.frames) where it would otherwise join bytes."""
        return False

    @property
    def backlog(self) -> int:
        """Bytes queued or waiting for the socket (a snapshot while others queue)."""
        return len(self._buf) + sum(map(len, list(self._pending)))

    def send(self, data: bytes) -> bool:
        """Queue one or more whole frames. Never blocks; False if the frames were dropped."""
        with self._lock:
            if not self._accepting:
                return False
            # Frames queued before these go first.
            reason = self._drain_locked() or self._send_locked(data)
            if reason is not None:
                self._abort_locked()
        if reason is not None:
            self._dropped(reason)
            return False
        self._unlocked()
        return True

    def queue(self, data: bytes) -> bool:
        """Append whole frames for a later :meth:`push`, from any thread: no lock, no
        syscall. False if the connection is closing (they are dropped)."""
        if not self._accepting:
            return False
        self._pending.append(data)
        return True

    def offer(self, data: bytes) -> None:
        """:meth:`queue` then :meth:`push` in one call, for the fan-out: when the lock is
        free and nothing is queued ahead, ``data`` goes straight to the socket with no
        copy into the buffer. At 1,000 recipients this is most deliveries, and the two
        calls and the buffer's copy cost as much as the ``send`` itself
        (docs/PERFORMANCE.md, "Fewer steps per delivery").

        If the lock is taken, ``data`` is queued before :meth:`push` tries it again (the
        order :meth:`push` relies on: append first, then try).

        Nothing to send (an IRC sender's ack without echo-message renders to no line)
        is no syscall: a ``send`` of zero bytes still gives the GIL up and takes it back,
        once per message (docs/PERFORMANCE.md, "The send path"). Nothing is owed to
        frames others queued meanwhile: whoever queues them pushes them."""
        if not data:
            return
        lock = self._lock
        # Positional: ``acquire(blocking=False)`` parses its keyword, some 0.4 µs of a
        # 3 µs delivery here (docs/PERFORMANCE.md, "The small room's pass").
        if not lock.acquire(False):
            if self._accepting:  # queue()'s work (not the method: subclasses translate)
                self._pending.append(data)
                self.push()
            return
        try:
            if not self._accepting:
                return  # closing: dropped, as queue() would have
            if self._pending or self._buf or self._held is not None or self.tls:
                reason = self._drain_locked() or self._send_locked(data)
            else:
                # The common case, _send_locked's first steps inlined.
                try:
                    sent = self._sock.send(data, _DONTWAIT)
                except BlockingIOError:
                    sent = 0
                except OSError as exc:
                    self._accepting = False  # the reader thread sees it too and cleans up
                    log.debug("send to %s failed: %s", self.name, exc)
                    return
                if self._extra:
                    self._wrote(sent)
                reason = None if sent == len(data) else self._keep_locked(data, sent)
            if reason is not None:
                self._abort_locked()
        finally:
            lock.release()
        if reason is not None:
            self._dropped(reason)
        elif self._pending:
            self.push()

    def push(self) -> None:
        """Write what :meth:`queue` left, unless another thread holds the lock: then that
        thread writes it once it lets go (``_unlocked``), and this one does not wait.

        Why that is enough: our frames were appended before we tried the lock. If we did
        not get it, the holder had not yet let go, and every holder looks at
        ``_pending`` after letting go, so it (or the next holder) sends them. The flusher
        owning a backlog only moves them into the buffer behind it."""
        while self._pending:
            if not self._lock.acquire(False):
                return
            try:
                reason = self._drain_locked()
                if reason is None and self._buf and not self._watching and self._open:
                    self._push_locked()
                elif reason is not None:
                    self._abort_locked()
            finally:
                self._lock.release()
            if reason is not None:
                self._dropped(reason)
                return

    def _unlocked(self) -> None:
        """Every holder of ``_lock`` calls this after letting go: frames queued while it
        held the lock, whose ``push`` found the lock taken, are sent now."""
        if self._pending:
            self.push()

    def _drain_locked(self) -> str | None:
        """Move queued frames into the buffer, in order; the reason to drop the
        connection if that overflows it. Lock held."""
        pending = self._pending
        if not pending:
            return None
        taken = pending[:]
        del pending[: len(taken)]  # what was appended since stays (module docstring)
        if not self._accepting:
            return None  # closing: dropped, as queue() would have
        buf = self._buf if self._held is None else self._held
        cap = self.limit + self._extra
        for data in taken:
            if len(buf) + len(data) > cap:
                pending.clear()
                return f"output backlog over {self.limit} bytes"
            buf += data
        return None

    def _push_locked(self) -> None:
        """Write the queued bytes now; hand any rest to the flusher. Lock held."""
        buf = self._buf
        try:
            sent = self._send_now(buf)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._accepting = False  # the reader thread sees it too and cleans up
            buf.clear()
            log.debug("send to %s failed: %s", self.name, exc)
            return
        del buf[:sent]
        self._wrote(sent)
        if buf:
            self._progress_at = self._flusher._clock()
            self._watching = True
            self._flusher._watch(self)

    def _send_locked(self, data: bytes) -> str | None:
        """Write or queue ``data``; the reason to drop the connection if it cannot."""
        if self._held is not None:
            if len(self._held) + len(data) > self.limit:
                return f"output backlog over {self.limit} bytes while replaying"
            self._held += data
            return None
        buf = self._buf
        cap = self.limit + self._extra
        if buf:
            if len(buf) + len(data) > cap:
                return f"output backlog over {self.limit} bytes"
            buf += data
            if not self._watching and self._open:
                self._push_locked()  # queued but not pushed yet: write it all, in order
            return None
        if not data:
            return None  # nothing to write: no syscall (offer's docstring)
        try:
            sent = self._send_now(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            # The reader thread sees the same failure and cleans up.
            self._accepting = False
            log.debug("send to %s failed: %s", self.name, exc)
            return None
        self._wrote(sent)
        if sent == len(data):
            return None
        return self._keep_locked(data, sent)

    def _keep_locked(self, data: bytes, sent: int) -> str | None:
        """The kernel took ``sent`` bytes of ``data`` into an empty buffer: the rest is
        the backlog, for the flusher; the reason to drop the connection if it is over
        the limit. Lock held."""
        if len(data) - sent > self.limit + self._extra:
            return f"output backlog over {self.limit} bytes"
        self._buf += memoryview(data)[sent:]
        self._progress_at = self._flusher._clock()
        self._watching = True
        self._flusher._watch(self)
        return None

    def _send_now(self, data: bytes | bytearray) -> int:
        """One non-blocking write; BlockingIOError if the kernel takes nothing. Lock held."""
        if not self.tls:
            return self._sock.send(data, _DONTWAIT)
        # The buffer only grows at its end, so its head still holds the bytes a retry
        # after want-write must repeat.
        return self._tls_writer.send(self._sock, data)

    def handshake_tls(self) -> None:
        """Admission thread, before the reader thread starts: a step of the TLS
        handshake (chatroom_server.tlsconn ``shake``), under the lock, as the sweep's
        ``bye`` may write through the same SSL object meanwhile. Raises as
        ``SSLSocket.do_handshake`` does (``SSLWantReadError``: wait for the client)."""
        sock = self._sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            with self._lock:
                sock.do_handshake()
        finally:
            self._unlocked()

    def recv_tls(self, size: int) -> bytes | None:
        """TLS reader thread: decrypted bytes, b"" at the end, None if none are ready yet
        (then poll the socket and call again)."""
        with self._lock:
            if not self._open:
                return b""
            data = tls_recv(self._sock, size)
        self._unlocked()
        return data

    def _wrote(self, n: int) -> None:
        if self._extra:
            self._extra = max(0, self._extra - n)

    def hold(self) -> None:
        """From now until :meth:`release`, frames sent are held back (what was queued
        before still goes out), up to the limit. For a replay that must reach the client
        before any live frame (docs/PROTOCOL.md §Resume): it goes out meanwhile through
        :meth:`replay`, ahead of them, at the pace the client reads (:meth:`wait_drained`)."""
        with self._lock:
            reason = self._drain_locked()
            if reason is None:
                self._held = bytearray()
            else:
                self._abort_locked()
        if reason is not None:
            self._dropped(reason)

    def replay(self, data: bytes) -> bool:
        """While holding: write ``data`` (part of a replay) ahead of the frames held,
        once the last part is written (:meth:`wait_drained`). False if the connection
        is gone."""
        with self._lock:
            reason = self._drain_locked()  # into the held buffer: live frames wait
            if reason is None and self._accepting:
                if self._buf:
                    self._buf += data
                    if not self._watching and self._open:
                        self._push_locked()
                else:
                    try:
                        sent = self._send_now(data)
                    except BlockingIOError:
                        sent = 0
                    except OSError as exc:
                        self._accepting = False  # the reader thread sees it too
                        log.debug("send to %s failed: %s", self.name, exc)
                        return False
                    if sent < len(data):
                        self._buf += memoryview(data)[sent:]
                        self._progress_at = self._flusher._clock()
                        self._watching = True
                        self._flusher._watch(self)
            if reason is not None:
                self._abort_locked()
            ok = self._accepting
        if reason is not None:
            self._dropped(reason)
        return ok

    def wait_drained(self, timeout: float) -> bool:
        """Wait until the backlog is written (to the kernel's socket buffer, which keeps
        the client busy meanwhile). A replay's pace: it reads the next page of the log
        only when the client has taken the last, so a replay holds a page here, never
        more, however long it is and whether or not its client reads. False if the
        connection is gone, or made no write progress for ``timeout`` s (then it is
        dropped, as a stalled client is by :meth:`check_stall`)."""
        stalled = False
        with self._lock:
            if self._drained is None:
                self._drained = threading.Condition(self._lock)
            if self._buf and not self._watching and self._open:
                self._push_locked()  # queued before the hold (login_ok), not pushed yet
            while self._accepting and self._buf:
                # Notified at every write of the backlog (_flush_locked) and at the end.
                if not self._drained.wait(timeout) and self._accepting:
                    self._abort_locked()
                    stalled = True
            ok = self._accepting
        if stalled:
            self._dropped(f"no write progress for {timeout:g} s during a replay")
        return ok

    @property
    def accepting(self) -> bool:
        """False once the connection is closing: the server said goodbye (:meth:`finish`)
        or dropped it."""
        return self._accepting

    @property
    def replay_unwritten(self) -> int:
        """Bytes of a released replay (everything before :meth:`release`'s frames, and
        those) not yet written to the socket: 0 once all of it has been. Read under the
        lock: a write and its count are one step, so bytes the client may have read
        are never counted unwritten."""
        with self._lock:
            return self._extra

    def release(self, first: bytes) -> bool:
        """Send ``first`` (the end of a replay), then what was held, and go back to
        normal. What was sent before it, and ``first``, may take the backlog past the
        limit until written (:meth:`replay_unwritten`): it is not a slow reader's. False
        if the connection is gone."""
        with self._lock:
            reason = self._drain_locked()  # into the held buffer, behind what is there
            held = self._held or b""
            self._held = None
            if reason is None and self._accepting:
                self._extra = len(self._buf) + len(first)
                reason = self._send_locked(first + held if held else first)
            if reason is not None:
                self._abort_locked()
            ok = self._accepting
        if reason is not None:
            self._dropped(reason)
            return False
        self._unlocked()
        return ok

    def _dropped(self, reason: str) -> None:
        log.warning("disconnecting %s: %s", self.name or self.fd, reason)
        if self.on_drop is not None:
            self.on_drop(reason)

    def _abort_locked(self) -> None:
        self._accepting = False
        self._held = None
        self._buf.clear()
        self._pending.clear()
        if self._watching:
            self._watching = False
            self._flusher._unwatch(self)
        if self._open:
            try:
                tcp_shutdown(self._sock, socket.SHUT_RDWR)  # wakes the reader thread
            except OSError:
                pass  # already disconnected
        if self._drained is not None:
            self._drained.notify_all()

    def _flush(self) -> None:
        """Flusher thread: write as much backlog as the kernel takes."""
        with self._lock:
            self._flush_locked()
        self._unlocked()

    def _flush_locked(self) -> None:
        reason = self._drain_locked()
        if reason is not None:
            self._abort_locked()
            log.warning("disconnecting %s: %s", self.name or self.fd, reason)
            return
        if not self._open or not self._buf:
            if self._watching:
                self._watching = False
                self._flusher._unwatch(self)
            return
        try:
            sent = self._send_now(self._buf)
        except BlockingIOError:
            return
        except OSError as exc:
            log.debug("flush to %s failed: %s", self.name, exc)
            self._abort_locked()
            return
        del self._buf[:sent]
        self._wrote(sent)
        self._progress_at = self._flusher._clock()
        if not self._buf:
            self._watching = False
            self._flusher._unwatch(self)
        if self._drained is not None:
            self._drained.notify_all()  # close() and wait_drained() wait for the end

    def check_stall(self, now: float) -> None:
        """Drop the connection if its backlog made no progress for ``stall_timeout`` s
        (called by the server's housekeeping sweep)."""
        with self._lock:
            stalled = (
                self._watching and bool(self._buf) and now - self._progress_at > self.stall_timeout
            )
            if stalled:
                self._abort_locked()
        if stalled:
            self._dropped(f"no write progress for {self.stall_timeout:g} s")
        else:
            self._unlocked()

    def kill(self) -> None:
        """Drop pending output and wake the reader thread; it then calls :meth:`close`."""
        with self._lock:
            self._abort_locked()

    def finish(self, last: bytes = b"") -> None:
        """Queue ``last`` (e.g. a ``bye``) as the final frame, accept no more, keep
        flushing what is queued, and wake the reader thread (``SHUT_RD``) so it can
        :meth:`close` gracefully. One lock hold, so nothing can slip in after ``last``."""
        with self._lock:
            # A replay in progress is abandoned: the goodbye goes out now, and whatever
            # was held with it (the client resumes from its cursor when it returns).
            self._held = None
            if last and self._accepting:
                # Queued frames first; on overflow the close below drops it all anyway.
                self._drain_locked() or self._send_locked(last)
            self._accepting = False
            self._pending.clear()
            if self._drained is not None:
                self._drained.notify_all()  # a replay waiting for room stops
            if self._open:
                try:
                    tcp_shutdown(self._sock, socket.SHUT_RD)
                except OSError:
                    pass  # the peer is already gone; close() copes

    def close(self, linger: float = 2.0, *, dead: bool = False) -> None:
        """Flush what is queued (waiting at most ``linger`` s), then close the socket.
        ``dead``: a read failed (a reset, a timeout), so nothing queued can arrive; it is
        dropped and the socket closed without a ``send`` or ``shutdown``.

        Called once, by the connection's own reader thread, when it is done.
        """
        with self._lock:
            if dead:
                # Each syscall here gives the GIL up and queues for it again; when
                # 10,000 connections are reset at once every thread is in that queue,
                # so two fewer syscalls each shorten the whole storm (docs/PERFORMANCE.md,
                # "Mass departures").
                self._held = None
                self._pending.clear()
                self._buf.clear()
                linger = 0
            self._drain_locked()  # what was queued before close() still goes out
            self._accepting = False
            if self._buf and not self._watching and self._open:
                self._push_locked()
            if self._buf and linger > 0:
                if self._drained is None:
                    self._drained = threading.Condition(self._lock)
                self._drained.wait_for(lambda: not self._buf, timeout=linger)
            if self._watching:
                self._watching = False
                self._flusher._unwatch(self)
            self._buf.clear()
            self._pending.clear()
            if self._open:
                self._open = False
                if not dead:
                    try:
                        tcp_shutdown(self._sock, socket.SHUT_WR)  # FIN after the queued bytes
                    except OSError:
                        pass  # the peer is already gone
                self._sock.close()
