"""IRC guests in the run: sessions without an account, with echo-message
(docs/IRC.md, "Guests"; docs/PROTOCOL.md §Guest rooms).

Each :class:`Guest` registers a nick no account has on a node's IRC port (``--irc-guests``)
with ``echo-message``, ``message-tags`` and ``server-time``, joins ``#lobby`` and, on the
single server, a guest room of the run (:data:`GUEST_ROOM`, never stored; a cluster's
guests have lobby only), then says something now and then in either, one line at a
time: it waits for the line's echo (or its refusal, a numeric) before the next.
docs/IRC.md promises the echo exactly once, with the ``msgid`` (the seq) the others
see, and a guest's lobby messages are stored as anyone's, so the run's users owe them
like any other.

The history holds a guest's session as a connection of the nick: each PRIVMSG as a
``pm`` frame out (with ``room`` for the guest room), its echo as an ``ack`` in (with the
``msgid`` as ``seq``), a refusal as an ``error``, and every PRIVMSG of someone else as
an ``irc_privmsg`` in (the lines of a long message the gateway split, one). The checker
then learns a lobby message's seq from the echo as from an ack, finds a seq the echo and
the deliveries disagree on, and counts echoes and deliveries per connection
(``echo_twice``, ``duplicate``). A guest never sends a line again: IRC has no cid, so a
line whose echo did not come is of unknown outcome. When its connection ends (a node
killed) it registers again, under the same nick if it is free (else with a suffix), as a
new session.

Threads: a guest's sending loop runs on its thread, its reader on another; the two
share a queue (the reader's answers to the line in flight) and ``rids`` (under ``lock``);
``stop`` ends both.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import socket
import threading
from collections.abc import Sequence
from typing import Any

from tests.nemesis.history import ConnClose, ConnOpen, History

__all__ = ["GUEST_ROOM", "Guest"]

log = logging.getLogger(__name__)

GUEST_ROOM = "guestroom"
LOBBY = "#lobby"


def parse(line: str) -> tuple[dict[str, str], str, str, list[str]]:
    """An IRC line: (tags, the prefix's nick ("" for the server's), command, params)."""
    tags: dict[str, str] = {}
    if line.startswith("@"):
        raw, _, line = line.partition(" ")
        for item in raw[1:].split(";"):
            k, _, v = item.partition("=")
            tags[k] = v
    nick = ""
    if line.startswith(":"):
        prefix, _, line = line.partition(" ")
        # A user's prefix is nick!user@host; the server's is its name alone ("").
        nick = prefix[1:].split("!", 1)[0] if "!" in prefix else ""
    trailing = None
    if " :" in line:
        line, _, trailing = line.partition(" :")
    params = line.split()
    command = params.pop(0).upper() if params else ""
    if trailing is not None:
        params.append(trailing)
    return tags, nick, command, params


class Guest:
    """One IRC guest (see the module docstring)."""

    def __init__(
        self,
        nick: str,
        addresses: Sequence[tuple[str, int]],
        history: History,
        seed: int,
        *,
        room: bool,
        rate: float = 0.8,
    ) -> None:
        self.base = nick
        self.addresses = list(addresses)
        self.history = history
        self.room = room  # whether to join and talk in the guest room
        self.rate = rate
        self.rng = random.Random(f"{seed}/{nick}")
        self.stop = threading.Event()
        self.client = history.new_client()
        self.said = 0
        self.errors: list[str] = []  # the thread's own failures, read once it has ended
        # text -> the request id of our PRIVMSG of it: written by the sending thread
        # before the line goes out, read by the reader at its echo; under ``lock``.
        self.rids: dict[str, int] = {}
        self.lock = threading.Lock()
        self.last_seq: int | None = None  # the reader's: the msgid of its last PRIVMSG
        self.thread = threading.Thread(target=self._main, name=f"nemesis-{nick}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _main(self) -> None:
        try:
            while not self.stop.is_set():
                self.session(self.rng.choice(self.addresses))
                self.stop.wait(self.rng.uniform(0.3, 1.0))
        except Exception as exc:  # a bug of the harness: the run reports it
            log.exception("guest %s failed", self.base)
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def session(self, address: tuple[str, int]) -> None:
        try:
            sock = socket.create_connection(address, timeout=5.0)
        except OSError:
            return
        answers: queue.Queue[tuple[str, str]] = queue.Queue()
        h = self.history
        conn: int | None = None
        nick: str | None = None
        self.last_seq = None  # the reader of the last session is gone (its socket closed)
        try:
            nick = self._register(sock, address)
            if nick is None:
                return
            conn = h.new_conn()
            h.add(
                ConnOpen(t=h.now(), user=nick, client=self.client, conn=conn, address=str(address))
            )
            reader = threading.Thread(
                target=self._read, args=(sock, nick, conn, answers), daemon=True
            )
            reader.start()
            channels = [LOBBY] + ([f"#{GUEST_ROOM}"] if self.room else [])
            sock.sendall(f"JOIN {','.join(channels)}\r\n".encode())
            rid = 0
            while not self.stop.wait(self.rng.expovariate(self.rate)) and reader.is_alive():
                rid += 1
                self.said += 1
                target = self.rng.choice(channels) if self.rng.random() < 0.6 else channels[0]
                text = f"{nick}.{self.said} " + self.rng.choice(("héllo", "echo", "字 🙂", "x"))
                room = None if target == LOBBY else GUEST_ROOM
                while not answers.empty():  # a late echo, an unrelated notice: not ours
                    answers.get_nowait()
                with self.lock:
                    self.rids[text] = rid
                h.frame_out(nick, self.client, conn, _pm(text, room, rid))
                sock.sendall(f"PRIVMSG {target} :{text}\r\n".encode())
                try:
                    kind, what = answers.get(timeout=5.0)
                except queue.Empty:
                    continue  # unknown outcome: never sent again
                if kind == "numeric":
                    h.frame_in(nick, self.client, conn, {"type": "error", "id": rid, "code": what})
        except OSError:
            pass  # the connection ended (a node killed or stopped): a new session next
        finally:
            with contextlib.suppress(OSError):
                sock.close()
            if conn is not None and nick is not None:
                h.add(ConnClose(t=h.now(), user=nick, client=self.client, conn=conn))

    def _register(self, sock: socket.socket, address: tuple[str, int]) -> str | None:
        """CAP, NICK, USER: the nick it got (None: none, or the connection ended)."""
        buf = b""
        for attempt in range(6):
            nick = self.base if attempt == 0 else f"{self.base}x{self.rng.randrange(1000)}"
            lines = [f"NICK {nick}"]
            if attempt == 0:
                lines = [
                    "CAP LS 302",
                    f"NICK {nick}",
                    f"USER {self.base} 0 * :nemesis guest",
                    "CAP REQ :echo-message message-tags server-time",
                    "CAP END",
                ]
            sock.sendall("".join(f"{x}\r\n" for x in lines).encode())
            while True:
                while b"\r\n" not in buf:
                    data = sock.recv(65536)
                    if not data:
                        return None
                    buf += data
                raw, _, buf = buf.partition(b"\r\n")
                _, _, command, params = parse(raw.decode("utf-8", "replace"))
                if command == "PING":
                    sock.sendall(f"PONG :{params[-1] if params else ''}\r\n".encode())
                elif command == "001":
                    sock.settimeout(None)
                    return nick
                elif command in ("433", "432"):
                    break  # the nick is held (a session a kill left behind): another
        return None

    def _read(
        self, sock: socket.socket, nick: str, conn: int, answers: queue.Queue[tuple[str, str]]
    ) -> None:
        buf = b""
        try:
            while not self.stop.is_set():
                data = sock.recv(65536)
                if not data:
                    return
                buf += data
                while b"\r\n" in buf:
                    raw, _, buf = buf.partition(b"\r\n")
                    tags, who, command, params = parse(raw.decode("utf-8", "replace"))
                    if command == "PING":
                        sock.sendall(f"PONG :{params[-1] if params else ''}\r\n".encode())
                    elif command == "PRIVMSG" and len(params) == 2:
                        self._privmsg(nick, conn, tags, who, params, answers)
                    elif command in ("401", "403", "404", "417", "412"):
                        answers.put(("numeric", command))
                    elif command == "NOTICE" and who == "":
                        # The server's own NOTICE: how the gateway refuses a PRIVMSG it
                        # has no numeric for (rate_limited, unavailable: irc/answers.py).
                        answers.put(("numeric", f"NOTICE {params[-1][:60] if params else ''}"))
        except OSError:
            return

    def _privmsg(
        self,
        nick: str,
        conn: int,
        tags: dict[str, str],
        who: str,
        params: list[str],
        answers: queue.Queue[tuple[str, str]],
    ) -> None:
        h = self.history
        target, text = params
        room = None if target.lower() == LOBBY else target.lstrip("#")
        seq = int(tags["msgid"]) if tags.get("msgid", "").isdigit() else None
        if who.lower() == nick.lower():
            # Our own line back (echo-message): the ack of the pm frame of that text.
            with self.lock:
                rid = self.rids.get(text, 0)
            ack: dict[str, Any] = {"type": "ack", "command": "pm", "id": rid}
            if room is not None:
                ack["room"] = room
            if seq is not None:
                ack["seq"] = seq
            h.frame_in(nick, self.client, conn, ack)
            answers.put(("echo", text))
            return
        if seq is not None and seq == self.last_seq:
            return  # the next line of a long message the gateway split (docs/IRC.md)
        self.last_seq = seq
        # Not a "broadcast": a split message's text cannot be put together again (the
        # split drops a space, or nothing), so the checker counts these by seq (or, in
        # a guest room, by sender and text) and takes no identity from them.
        frame: dict[str, Any] = {"type": "irc_privmsg", "from": who, "message": text}
        if room is not None:
            frame["room"] = room
        if seq is not None:
            frame["seq"] = seq
        h.frame_in(nick, self.client, conn, frame)


def _pm(text: str, room: str | None, rid: int) -> dict[str, Any]:
    frame: dict[str, Any] = {"command": "pm", "message": text, "id": rid}
    if room is not None:
        frame["room"] = room
    return frame
