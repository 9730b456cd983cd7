"""chat-load over WebSocket (``--transport ws``, docs/WEB.md): one bot's WebSocket, as a
translator between the bytes on its socket and the JSON lines the pool and the SDK's
session speak. wsproto (sans-I/O) does the handshake, every frame the bots send, and
every frame received that is not the common case; the pool does the I/O. A
:class:`WsLink` belongs to the pool's loop thread, as its bot does.

The common case has a fast path (:meth:`WsLink.unwrap`): a whole, final, unmasked text
frame, which is nearly every frame of a run. wsproto takes ~12 µs of Python to read one,
and the generator shares the machine's cores with the server it measures: at 1,000 bots
and 100 msg/s (100,000 deliveries/s) the bots fell behind, their backlogs passed the
server's limit, and three deliveries in four were lost to slow-consumer drops. The fast
path reads the frame's two-to-four header bytes and takes the payload; anything else
(a control frame, a fragment, a reserved bit, a mask, a 64-bit length) goes to wsproto
whole, in order, so that wsproto never holds a partial frame across the two paths.
"""

from __future__ import annotations

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

WS_PATH = "/ws"


class WsClosed(Exception):
    """The WebSocket was refused or closed by the server."""


class WsLink:
    """One bot's WebSocket: :meth:`handshake` first, then :meth:`wrap` what the session
    sends and :meth:`unwrap` what arrives."""

    __slots__ = ("_parts", "_rest", "host", "open", "ws")

    def __init__(self, host: str, port: int) -> None:
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.host = f"{host}:{port}"
        self.open = False  # the server accepted the handshake
        self._parts: list[str] = []  # a text message in fragments, not finished yet
        self._rest = b""  # the start of a frame not whole yet (after the handshake)

    def handshake(self) -> bytes:
        return self.ws.send(Request(host=self.host, target=WS_PATH))

    def wrap(self, data: bytes) -> bytes:
        """JSON lines (each ending in a newline) -> one masked text message each."""
        send = self.ws.send
        return b"".join(send(TextMessage(data=line.decode())) for line in data.split(b"\n") if line)

    def unwrap(self, data: bytes) -> tuple[bytes, bytes, bool]:
        """Bytes read -> (JSON lines, bytes to send back as they are (pongs, the close's
        answer), whether the handshake completed in them). Raises :class:`WsClosed`."""
        if not self.open:
            # The handshake's answer, alone: the server sends nothing more until the
            # bot's first frame (its login), so no frame is left in wsproto's buffer.
            return self._slow(data)
        buf = self._rest + data if self._rest else data
        out: list[bytes] = []
        back = b""
        at, end = 0, len(buf)
        while end - at >= 2:
            b0, b1 = buf[at], buf[at + 1]
            size = b1 & 0x7F
            head = 2
            if size == 126:
                if end - at < 4:
                    break
                size = (buf[at + 2] << 8) | buf[at + 3]
                head = 4
            elif size == 127:
                if end - at < 10:
                    break
                size = int.from_bytes(buf[at + 2 : at + 10], "big")
                head = 10
            if b1 & 0x80:
                head += 4  # masked: a server must not, but wsproto says so
            stop = at + head + size
            if stop > end:
                break
            if b0 == 0x81 and not b1 & 0x80 and head <= 4 and not self._parts:
                out.append(buf[at + head : stop])  # FIN, text, unmasked: the fast path
            else:
                lines, more, _ = self._slow(buf[at:stop])
                if lines:
                    out.append(lines[:-1])
                back += more
            at = stop
        self._rest = buf[at:]
        if not out:
            return b"", back, False
        out.append(b"")
        return b"\n".join(out), back, False

    def _slow(self, data: bytes) -> tuple[bytes, bytes, bool]:
        """``data`` through wsproto (the handshake's answer, or one whole frame)."""
        self.ws.receive_data(data)
        lines: list[str] = []
        back = b""
        opened = False
        for event in self.ws.events():
            if type(event) is TextMessage:
                if event.message_finished and not self._parts:
                    lines.append(event.data)
                    continue
                self._parts.append(event.data)
                if event.message_finished:
                    lines.append("".join(self._parts))
                    self._parts.clear()
            elif isinstance(event, AcceptConnection):
                self.open = opened = True
            elif isinstance(event, Ping):
                back += self.ws.send(event.response())
            elif isinstance(event, CloseConnection):
                raise WsClosed(f"closed by the server ({event.code} {event.reason})")
            elif isinstance(event, RejectConnection):
                raise WsClosed(f"handshake refused: HTTP {event.status_code}")
        if not lines:
            return b"", back, opened
        return ("\n".join(lines) + "\n").encode(), back, opened
