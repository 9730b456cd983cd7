"""The web port (docs/WEB.md): the web client's files over HTTP, and the chat protocol
over WebSocket at ``/ws``, on the server's own threads.

A web connection is an ordinary connection of the server (chatroom_server.server), as an
IRC one is: its own reader thread, an :class:`~chatroom_server.outbox.Outbox`, and every
limit of the TCP port (flood control, slow consumers, login and idle timeouts, connection
caps). Only its edges differ, and no byte of WebSocket framing is written here: HTTP is
parsed and written by h11, WebSocket by wsproto (both sans-I/O).

- **In** (:class:`WebSession`, the connection's reader thread): first HTTP/1.1 with
  keep-alive; ``GET /`` and the client's files are answered from the package's
  ``static/`` directory (read once, never a path from the request). ``GET /ws`` with a
  WebSocket upgrade is checked (``Origin`` against the allow-list, below) and handed to
  wsproto; from then on each text message is one JSON frame, handed to the server's
  command path exactly as a line from the TCP port (``CommandRunner.handle``), and with
  the same frame limit. Every HTTP request also counts as a frame for flood control.
  A handshake asking for the ``text.ircv3.net`` subprotocol gets IRC instead: the
  connection also gets an :class:`~chatroom_server.irc.IrcSession`, each text message is
  an IRC line for it, and what it sends goes out one line per message.
- **Out** (:class:`WebOutbox`): every frame the server sends this connection becomes one
  WebSocket text message. The fan-out hands the same bytes object to every recipient, and
  a server's frames are never masked, so the framed bytes are the same for every
  recipient: the last translation is cached (``_LAST``), one per message, not one per
  delivery. ``bye`` is followed by a close frame.

``Origin``: a browser sends it with every WebSocket handshake. A page from another site
must not be able to open a connection in its visitor's name, so the handshake is refused
(403) unless the origin is in ``--web-origin``, or, by default, names the host the
request was sent to. Nothing here reads a cookie: credentials come only in the login
frame, so a cross-site page could at most log in with a password it already knows.
A request without ``Origin`` (not a browser: a bot, chat-load) is allowed.

Threads: a :class:`WebSession`, its h11 and wsproto objects belong to the connection's
reader thread. :class:`WebOutbox` is called from any thread; the framing it does uses a
wsproto frame encoder per thread (``_ENCODERS``: a ``threading.local``), never one shared,
and reads one attribute of the session (``upgraded``), set by the reader thread before
anything is sent that depends on it. ``_LAST`` is a tuple replaced whole.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import h11
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Request,
    TextMessage,
)
from wsproto.frame_protocol import CloseReason, FrameProtocol
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from chatroom.errors import FrameTooLarge, ProtocolError
from chatroom_server.irc import IrcSession
from chatroom_server.irc.core import Connection, Core, Runner
from chatroom_server.irc.translations import Translations
from chatroom_server.outbox import Outbox

log = logging.getLogger(__name__)

WS_PATH: Final = "/ws"
IRC_SUBPROTOCOL: Final = "text.ircv3.net"  # IRC over WebSocket (docs/IRC.md)
MAX_HEADERS: Final = 16 * 1024  # bytes of one HTTP request's head

_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
}
# Every response: the page may load only its own files and talk only to its own host
# (connect-src 'self' covers ws: and wss: to the same host), never be framed, never
# send a Referer, and a browser must not guess a type.
_SECURITY: Final = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-cache"),
]


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str


def load_static() -> dict[str, StaticFile]:
    """The web client's files by URL path, read once from the package: a request can
    only ever name one of these, so no path from the network reaches the file system."""
    files: dict[str, StaticFile] = {}
    root = resources.files("chatroom_server") / "static"

    def walk(node: resources.abc.Traversable, prefix: str) -> None:
        for child in node.iterdir():
            if child.is_dir():
                walk(child, f"{prefix}{child.name}/")
                continue
            dot = child.name.rfind(".")
            kind = _TYPES.get(child.name[dot:]) if dot > 0 else None
            if kind is not None:
                files[f"/{prefix}{child.name}"] = StaticFile(child.read_bytes(), kind)

    if root.is_dir():
        walk(root, "")
    if "/index.html" in files:
        files["/"] = files["/index.html"]
    return files


# ------------------------------------------------------------------------------ out

_ENCODERS = threading.local()  # one wsproto frame encoder per thread (module docstring)
_LAST: tuple[bytes, bytes] = (b"", b"")  # (frames, their WebSocket messages), replaced whole
_LAST_IRC: tuple[bytes, bytes] = (b"", b"")  # the same for IRC lines (IRC over WebSocket)


def _encoder() -> FrameProtocol:
    fp: FrameProtocol | None = getattr(_ENCODERS, "fp", None)
    if fp is None:
        fp = _ENCODERS.fp = FrameProtocol(client=False, extensions=[])
    return fp


def ws_messages(data: bytes) -> bytes:
    """One WebSocket text message per JSON frame of ``data`` (frames end in ``\\n``)."""
    global _LAST
    last = _LAST
    if last[0] is data:
        return last[1]
    fp = _encoder()
    out = b"".join(fp.send_data(line.decode(), fin=True) for line in data.split(b"\n") if line)
    _LAST = (data, out)
    return out


def ws_irc_messages(data: bytes) -> bytes:
    """One WebSocket text message per IRC line of ``data`` (lines end in CRLF), as the
    ``text.ircv3.net`` subprotocol has them: no CRLF inside. The IRC side caches its
    translation per frame (irc.Translations), so the same bytes come here for every
    recipient with the same capabilities."""
    global _LAST_IRC
    last = _LAST_IRC
    if last[0] is data:
        return last[1]
    fp = _encoder()
    out = b"".join(
        fp.send_data(line.decode("utf-8", "replace"), fin=True)
        for line in data.split(b"\r\n")
        if line
    )
    _LAST_IRC = (data, out)
    return out


def ws_close(code: int = CloseReason.NORMAL_CLOSURE, reason: str = "") -> bytes:
    return bytes(_encoder().close(code, reason))


class WebOutbox(Outbox):
    """An :class:`~chatroom_server.outbox.Outbox` that sends the server's frames as
    WebSocket messages once the connection is upgraded (module docstring, "Out")."""

    __slots__ = ("session",)

    session: WebSession

    @property
    def renders(self) -> bool:
        return self.session.irc is not None  # IRC over WebSocket

    def _frame(self, data: bytes) -> bytes:
        # Before the upgrade the only JSON frames sent here are goodbyes (server full,
        # login timeout, shutdown), and the connection closes after them. Nothing is
        # written for them: an HTTP answer nobody asked for would be read by a browser
        # as the answer to the next request it sends on this keep-alive connection.
        if not self.session.upgraded:
            return b""
        irc = self.session.irc
        if irc is not None:
            return ws_irc_messages(irc.translate(data))
        return ws_messages(data)

    def send(self, data: bytes) -> bool:
        return super().send(self._frame(data))

    def queue(self, data: bytes) -> bool:
        return super().queue(self._frame(data))

    def offer(self, data: bytes) -> None:
        super().offer(self._frame(data))

    def replay(self, data: bytes) -> bool:
        return super().replay(self._frame(data))

    def release(self, first: bytes) -> bool:
        return super().release(self._frame(first))

    def finish(self, last: bytes = b"") -> None:
        if self.session.upgraded:
            end = self._frame(last) if last else b""
            super().finish(end + ws_close(CloseReason.NORMAL_CLOSURE, "bye"))
        else:
            super().finish(b"")

    def send_irc(self, data: bytes) -> bool:
        """IRC lines made by the IRC session (numerics, PONG, ...), as messages."""
        return super().send(ws_irc_messages(data))

    def send_raw(self, data: bytes) -> bool:
        """Bytes made here (HTTP, a pong, a close frame), sent as they are."""
        return super().send(data)


# ------------------------------------------------------------------------------ in


class WebRunner(Runner, Protocol):
    """The server's command path, as a web session calls it
    (chatroom_server.runner.CommandRunner): IRC's, and whole JSON frames."""

    def refused(self, conn: Any, exc: ProtocolError) -> bool:
        """Answer a refused frame; False after too many protocol errors in a row."""

    def handle(self, conn: Any, frame: bytes) -> bool:
        """One whole JSON frame; False closes the connection."""


class Host(Core, Protocol):
    """What a web session asks of the server (chatroom_server.server.ChatServer): what
    the IRC gateway may ask, for IRC over WebSocket, and its command path for JSON. Named
    here rather than imported, so that this transport depends on no module above it."""

    irc_translations: Translations

    @property
    def runner(self) -> WebRunner: ...


class WebConn(Connection, Protocol):
    """What a web session reads and sets of the server's connection object."""

    irc: IrcSession | None


class WebSession:
    """One web connection: HTTP until a WebSocket upgrade, then JSON frames."""

    def __init__(
        self, server: Host, conn: WebConn, files: dict[str, StaticFile], origins: frozenset[str]
    ) -> None:
        self.server = server
        self.conn = conn
        self.files = files
        self.origins = origins
        self.upgraded = False  # set once, by the reader thread (module docstring)
        # IRC over WebSocket (the text.ircv3.net subprotocol): set with ``upgraded``, and
        # also the connection's ``irc``, so that the server's IRC code runs as for IRC.
        self.irc: IrcSession | None = None
        self._http: h11.Connection | None = h11.Connection(
            h11.SERVER, max_incomplete_event_size=MAX_HEADERS
        )
        self._ws: WSConnection | None = None
        self._message: list[str] = []  # the parts of a text message not yet finished
        self._size = 0  # their length so far, against the frame limit

    @property
    def outbox(self) -> WebOutbox:
        ob = self.conn.outbox
        assert isinstance(ob, WebOutbox)
        return ob

    def feed(self, data: bytes) -> bool:
        """Bytes read from the socket; False closes the connection."""
        if self._ws is not None:
            return self._feed_ws(data)
        return self._feed_http(data)

    # -------------------------------------------------------------- HTTP

    def _feed_http(self, data: bytes) -> bool:
        http = self._http
        assert http is not None
        try:
            http.receive_data(data)
            while True:
                event = http.next_event()
                if event is h11.NEED_DATA:
                    return True
                if isinstance(event, h11.Request):
                    keep = self._request(http, event)
                    if not keep or self._ws is not None:
                        return keep
                elif isinstance(event, h11.ConnectionClosed):
                    return False
                elif event is h11.PAUSED:
                    if http.our_state is h11.DONE and http.their_state is h11.DONE:
                        http.start_next_cycle()  # keep-alive: the next request
                        continue
                    return False
        except h11.RemoteProtocolError as exc:
            log.info("%r: bad HTTP request: %s", self.conn, exc)
            if http.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                self._respond(http, exc.error_status_hint, "bad request\n", close=True)
            return False

    def _respond(
        self,
        http: h11.Connection,
        status: int,
        text: str,
        *,
        close: bool = False,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        body = text.encode()
        self._send(
            http,
            status,
            [(b"content-type", b"text/plain; charset=utf-8"), *(headers or [])],
            body,
            close=close,
        )

    def _send(
        self,
        http: h11.Connection,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        *,
        close: bool = False,
        head: bool = False,
    ) -> None:
        all_headers = [*headers, *_SECURITY, (b"content-length", str(len(body)).encode())]
        if close:
            all_headers.append((b"connection", b"close"))
        out = http.send(h11.Response(status_code=status, headers=all_headers))
        out += http.send(h11.Data(data=body)) if body and not head else b""
        out += http.send(h11.EndOfMessage())
        self.outbox.send_raw(out)

    def _request(self, http: h11.Connection, req: h11.Request) -> bool:
        """One HTTP request; False closes the connection.

        Every request is metered, and a connection that floods is closed. A file
        request over the rate, or past the frames a connection may send before a login,
        is still answered (the files are in memory; a page missing a module is broken)
        but with ``connection: close``: the browser asks again on a new connection,
        and no connection stays open without a login for more than those frames."""
        allowed = self.server.runner.meter(self.conn)
        if allowed is None:
            return False  # flooding
        spent = not allowed or self.conn.frames > self.server.config.max_frames_before_login
        method = req.method.decode("ascii", "replace")
        path = urlsplit(req.target.decode("ascii", "replace")).path
        if path == WS_PATH:
            if spent:
                self._respond(http, 429, "too many requests\n", close=True)
                return False
            return self._upgrade(http, req)
        if method not in ("GET", "HEAD"):
            headers = [(b"allow", b"GET, HEAD")]
            self._respond(http, 405, "only GET and HEAD\n", headers=headers, close=spent)
            return not spent
        found = self.files.get(path)
        if found is None:
            self._respond(http, 404, "not found\n", close=spent)
            return not spent
        self._send(
            http,
            200,
            [(b"content-type", found.content_type.encode())],
            found.body,
            head=method == "HEAD",
            close=spent,
        )
        return not spent

    def _origin_allowed(self, req: h11.Request) -> bool:
        origin = host = None
        for name, value in req.headers:
            if name == b"origin":
                origin = value.decode("ascii", "replace")
            elif name == b"host":
                host = value.decode("ascii", "replace").lower()
        if origin is None:
            return True  # not a browser (module docstring)
        if self.origins:
            return origin in self.origins
        return host is not None and urlsplit(origin).netloc.lower() == host

    def _upgrade(self, http: h11.Connection, req: h11.Request) -> bool:
        if not self._origin_allowed(req):
            log.warning("%r: WebSocket from a foreign origin refused", self.conn)
            self._respond(http, 403, "origin not allowed\n", close=True)
            return False
        ws = WSConnection(ConnectionType.SERVER)
        try:
            ws.initiate_upgrade_connection(list(req.headers), req.target)
            handshake = next((e for e in ws.events() if isinstance(e, Request)), None)
        except RemoteProtocolError as exc:
            log.info("%r: bad WebSocket handshake: %s", self.conn, exc)
            self._respond(http, 400, f"a WebSocket handshake is expected here: {exc}\n")
            return False
        if handshake is None:
            self._respond(http, 400, "a WebSocket handshake is expected here\n", close=True)
            return False
        # No subprotocol is the JSON protocol; text.ircv3.net is IRC, one line a message
        # (docs/IRC.md), for web IRC clients such as Kiwi IRC and gamja.
        subprotocol = None
        if IRC_SUBPROTOCOL in handshake.subprotocols:
            subprotocol = IRC_SUBPROTOCOL
            server = self.server
            self.irc = self.conn.irc = IrcSession(
                server, self.conn, server.config.irc_channel, server.irc_translations
            )
        self.upgraded = True  # before the 101: frames sent after it are WebSocket
        self.outbox.send_raw(ws.send(AcceptConnection(subprotocol=subprotocol)))
        self._ws = ws
        self._http = None
        rest, _closed = http.trailing_data
        log.debug("%r: WebSocket open", self.conn)
        return self._feed_ws(bytes(rest)) if rest else True

    # -------------------------------------------------------------- WebSocket

    def _feed_ws(self, data: bytes) -> bool:
        ws = self._ws
        assert ws is not None
        ws.receive_data(data)
        for event in ws.events():
            if isinstance(event, TextMessage):
                if not self._text(event):
                    return False
            elif isinstance(event, Ping):
                self.outbox.send_raw(ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self._closing(ws, event)
                return False
            elif isinstance(event, BytesMessage):
                # One JSON frame per *text* message (docs/WEB.md): say so and end.
                self.outbox.send_raw(
                    ws.send(CloseConnection(CloseReason.UNSUPPORTED_DATA, "text frames only"))
                )
                return False
        return True

    def _closing(self, ws: WSConnection, event: CloseConnection) -> None:
        """The client's close (answered), or wsproto's report of a protocol error (sent)."""
        try:
            if ws.state is ConnectionState.REMOTE_CLOSING:
                self.outbox.send_raw(ws.send(event.response()))
            elif ws.state is ConnectionState.OPEN:
                self.outbox.send_raw(ws.send(CloseConnection(event.code, event.reason)))
        except LocalProtocolError as exc:
            log.debug("%r: no close frame: %s", self.conn, exc)
        log.debug("%r: WebSocket closed: %s %s", self.conn, event.code, event.reason)

    def _text(self, event: TextMessage) -> bool:
        self._size += len(event.data)  # characters: bytes are at least as many
        limit = self.server.config.limits.max_frame
        if self._size > limit:
            self.server.runner.refused(self.conn, FrameTooLarge(limit))
            return False
        if not event.message_finished:
            self._message.append(event.data)
            return True
        text = "".join([*self._message, event.data]) if self._message else event.data
        self._message.clear()
        self._size = 0
        frame = text.encode()
        if self.irc is not None:
            # One IRC line a message; the IRC decoder applies IRC's own line limit.
            return self.irc.receive_data(frame + b"\r\n")
        if len(frame) > limit:
            self.server.runner.refused(self.conn, FrameTooLarge(limit))
            return False
        return self.server.runner.handle(self.conn, frame)
