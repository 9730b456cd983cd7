"""The command runner: what a connection's session makes of its input, carried out.

The transports are peers over this one core (docs/ARCHITECTURE.md): the JSON line
transport hands each read to :meth:`CommandRunner.frames`, the WebSocket transport each
message to :meth:`CommandRunner.handle` (chatroom_server.web), and the IRC gateway
meters each line and runs the commands it builds (:meth:`CommandRunner.meter`,
:meth:`CommandRunner.run_command`, as irc.core.Runner); each calls this directly
(``ChatServer.runner``), with no hop through the server. The session
(chatroom_server.session, sans-I/O) yields actions: replies and closes go out through
:class:`~chatroom_server.replies.Replies`, commands through the command table
(chatroom_server.commands) to their handlers (chatroom_server.handlers); a refused
command is answered here, and too many refusals in a row close the connection.

Runs on the reader thread of the connection it serves; no state of its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from chatroom.errors import ProtocolError
from chatroom.protocol import ClientCommand, ErrorCode, validate_command
from chatroom_server.commands import Dispatch
from chatroom_server.session import BYE_FLOOD, Action, Close, Reply

if TYPE_CHECKING:
    from chatroom_server.config import ServerConfig
    from chatroom_server.conn import Conn
    from chatroom_server.handlers import Handlers
    from chatroom_server.replies import Replies


class CommandRunner:
    """Carries out sessions' actions for one server (module docstring)."""

    __slots__ = ("_commands", "_config", "_replies")

    def __init__(self, config: ServerConfig, handlers: Handlers, replies: Replies) -> None:
        self._config = config
        self._replies = replies
        # Every client command's handler and properties (chatroom_server.commands).
        self._commands: Dispatch[Conn] = Dispatch.bind(handlers, replies.flush_batch)

    def frames(self, conn: Conn, data: bytes) -> str | None:
        """The JSON line transport: carry out what the connection's session makes of
        one read (chatroom_server.session); the reason to close it, or None."""
        return self.act(conn, conn.receive_data(data))

    def handle(self, conn: Conn, frame: bytes) -> bool:
        """One whole frame from a transport with framing of its own (WebSocket,
        chatroom_server.web); False closes the connection."""
        return self.act(conn, conn.receive_frame(frame)) is None

    def act(self, conn: Conn, actions: Iterable[Action]) -> str | None:
        """Carry out a session's actions (chatroom_server.session); the reason to close
        the connection, or None."""
        for action in actions:
            if isinstance(action, Reply):
                self._replies.send_after_batch(conn, action.data)
            elif isinstance(action, Close):
                self.close(conn, action)
                return action.reason
            else:
                try:
                    keep = self._commands.run(conn, action)
                except ProtocolError as exc:
                    keep = self.refused(conn, exc)
                else:
                    conn.succeeded()
                if not keep:
                    return "closed by server"
        return None

    def close(self, conn: Conn, close: Close) -> None:
        """The session closes: its bye, if it has one, behind everything it was sent."""
        if close.bye is not None:
            self._replies.finish(conn, close.bye)

    def meter(self, conn: Conn) -> bool | None:
        """An IRC line against flood control (ServerSession.meter); None: it floods, and
        its bye (ERROR) is on its way."""
        allowed = conn.meter()
        if allowed is None:
            self.close(conn, Close("flooding", BYE_FLOOD))
        return allowed

    def run_command(self, conn: Conn, cmd: ClientCommand, allowed: bool) -> bool:
        """Run one command, metered already (``allowed``: within the rate); False closes
        the connection. The IRC gateway calls this with the commands it builds."""
        try:
            if conn.username is None and conn.frames > self._config.max_frames_before_login:
                rules = conn.rules
                self._replies.send_error(
                    conn, ErrorCode.NOT_LOGGED_IN, rules.too_many_before_login(), cmd.id
                )
                return False
            if not allowed:
                raise ProtocolError(ErrorCode.RATE_LIMITED, conn.rules.rate_limited_text(), cmd.id)
            validate_command(cmd, self._config.limits)
            keep = self._commands.run(conn, cmd)
        except ProtocolError as exc:
            return self.refused(conn, exc)
        conn.succeeded()
        return keep

    def refused(self, conn: Conn, exc: ProtocolError) -> bool:
        """Answer a refused command; False after too many protocol errors in a row."""
        for action in conn.refused(exc):
            if isinstance(action, Reply):
                self._replies.send_after_batch(conn, action.data)
            elif isinstance(action, Close):
                return False
        return True
