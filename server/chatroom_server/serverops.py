"""Server operators' actions on sessions (docs/PROTOCOL.md §Moderation, "Server
operators' commands"; docs/IRC.md "Operators"): ``kill`` (the JSON command, and IRC's
KILL, which the gateway hands the server as that command) ends a user's session on
whichever node has it, and WALLOPS reaches the IRC clients with user mode ``+w`` on
every node.

Checked here once, for every transport: the actor is a server operator (an account
``chat-server admin grant`` made one, read from the database now, or a session an IRC
O-line made one). A kill is stored in the audit log (who, whom, why, when, and the
O-line, if one made its author an operator) **before** it is done: one that cannot be
recorded is refused ``unavailable`` and ends nothing, as a room's moderation action
whose audit record cannot be written is.

In a cluster (docs/CLUSTER.md, "Server operators"), a kill whose user is not on this
node, every WALLOPS and every O-line's ``OPER``, goes on the cluster's stream as an
operator entry
(``ClusterBus.publish_operator``); every node's consumer hands it to
:meth:`ServerOps.from_cluster`, which ends the session the kill names, or sends the
WALLOPS to that node's ``+w`` clients (not the publisher's, which sent its own at once),
or notes that an O-line made a session on another node an operator (WHOIS's 313 and
``whois`` there as on its own node), until that user leaves or logs in again. The
``OPER`` is also kept in Redis while its session lasts (``ClusterBus.oper``), for the
nodes that start later.

A kill names one session: the node and the session id that Redis's presence hash has
for the user when the kill is made (``ClusterBus.holder``), not the user. A node's
consumer may read it late, after that session ended and the user logged in again (on
that node or another): the new session is not the one killed, and stays. A kill of a
session that has ended is logged and does nothing.

Threads: :meth:`kill` and :meth:`wallops` run on the operator's reader thread,
:meth:`from_cluster` and :meth:`forget` on the cluster's consumer thread. Its one state,
the O-line operators of other nodes, is under ``_lock``; the presence is read under its
own lock, and an outbox may be called from any thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, cast

from chatroom.errors import ErrorCode, ProtocolError
from chatroom.moderation import KillCommand
from chatroom.protocol import Bye, ByeReason, encode, username_key
from chatroom_server.accounts import AccountStoreBusy
from chatroom_server.cluster.errors import ClusterUnavailable
from chatroom_server.replies import IrcLines

if TYPE_CHECKING:
    from chatroom_server.backends import Backends
    from chatroom_server.config import ServerConfig
    from chatroom_server.conn import Conn
    from chatroom_server.presence import Presence

log = logging.getLogger(__name__)

NO_REASON: Final = "no reason given"


def killed_text(by: str, reason: str | None) -> str:
    """Why a killed session ended, as IRC says it (``Killed (oper (reason))``)."""
    return f"Killed ({by} ({reason or NO_REASON}))"


class ServerOps:
    """A server's operator actions on sessions (module docstring)."""

    def __init__(self, config: ServerConfig, backends: Backends, presence: Presence) -> None:
        self._config = config
        self._b = backends
        self._presence = presence
        # Cluster: the username keys of sessions on other nodes that an IRC O-line made
        # operators (an ``oper`` entry), until that user leaves or logs in again
        # anywhere (forget). Added and removed by the consumer thread, read by any
        # (WHOIS, WHO): under _lock.
        self._lock = threading.Lock()
        self._elsewhere: set[str] = set()

    def opered(self, conn: Conn) -> None:
        """An IRC O-line made ``conn``'s session an operator: the other nodes are told,
        for their WHOIS, WHO and ``whois`` (docs/CLUSTER.md, "Server operators")."""
        bus, name = self._b.bus, conn.username
        if bus is None or name is None:
            return
        if not bus.oper(name, str(conn.num)):
            log.warning("the other nodes do not know %s is an operator", name)

    def opered_elsewhere(self, key: str) -> bool:
        """Whether an O-line made the session of ``key`` on another node an operator."""
        with self._lock:
            return key in self._elsewhere

    def opered_keys(self) -> frozenset[str]:
        """The keys of the O-line operators' sessions on other nodes."""
        with self._lock:
            return frozenset(self._elsewhere)

    def forget(self, name: str) -> None:
        """``name`` left another node, or logged in again somewhere: its new session is
        no operator until an O-line makes it one (consumer thread)."""
        with self._lock:
            self._elsewhere.discard(username_key(name))

    def is_operator(self, conn: Conn) -> bool:
        """``conn``'s session may act as a server operator now: an O-line made it one,
        or its account is one (read now: a revoke holds). Raises AccountStoreBusy."""
        if conn.oper:
            return True
        gate = self._b.gate
        return conn.username is not None and gate is not None and gate.is_operator(conn.username)

    def kill(self, conn: Conn, cmd: KillCommand) -> tuple[str, Callable[[], None]]:
        """Check and record ``cmd``: the target's name as its session has it, and what
        ends that session (called by the handler once the operator's ``ack`` is on its
        way: a self-kill's ack is sent before its ``bye``). ProtocolError:
        ``not_operator``, ``user_offline`` (nobody of that name online on any node),
        ``unavailable`` (the database or the cluster cannot answer: nothing is done)."""
        by = conn.username
        assert by is not None
        gate = self._b.gate
        assert gate is not None  # start() opens it before any connection
        bus = self._b.bus
        try:
            if not self.is_operator(conn):
                why = "kill is for server operators"
                raise ProtocolError(ErrorCode.NOT_OPERATOR, why, cmd.id)
            local = self._presence.online(username_key(cmd.user))
            name = local.username if local is not None else self._presence.spelled(cmd.user)
            target: tuple[str, str] | None = None
            if name is not None and local is None and bus is not None:
                # On another node, which only the stream reaches: the session Redis
                # has now is the one killed (module docstring); refused before the
                # audit says it was done if Redis cannot say.
                if not bus.available:
                    raise AccountStoreBusy("the cluster is unreachable")
                try:
                    target = bus.holder(username_key(name))
                except ClusterUnavailable as exc:
                    raise AccountStoreBusy(str(exc)) from exc
                if target is None:
                    name = None  # left meanwhile: this node's list is behind
            if name is None:
                raise ProtocolError(ErrorCode.USER_OFFLINE, f"{cmd.user} is not online", cmd.id)
            detail = {} if conn.oline is None else {"oline": conn.oline}
            gate.record(self._config.wall_clock(), by, "kill", name, cmd.reason, detail)
        except AccountStoreBusy as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"try again: {exc}", cmd.id) from exc
        log.warning(
            "%s%s kills %s (%s)",
            by,
            "" if conn.oline is None else f" (O-line {conn.oline})",
            name,
            cmd.reason or NO_REASON,
        )
        reason = cmd.reason
        if local is not None:
            return name, lambda: self.end(local, by, reason)
        assert bus is not None and target is not None  # a session on another node
        node, session = target
        entry = {"a": "kill", "u": name, "by": by, "r": reason or "", "to": node, "s": session}

        def elsewhere() -> None:
            if not bus.publish_operator(entry):
                log.error("the kill of %s could not be published: Redis is unreachable", name)

        return name, elsewhere

    def end(self, conn: Conn, by: str, reason: str | None) -> None:
        """End a killed session at once: ``bye`` ``disconnected`` with who and why as
        its ``message``, the final frame of its outbox (so nothing queued is dropped
        before it), which an IRC session renders as ``ERROR :Closing link: chatroom
        (Killed (by (reason)))``. Its departure is an ordinary one (a QUIT, a ``left``)."""
        log.warning("%r ended by %s's kill", conn, by)
        bye = Bye(reason=ByeReason.DISCONNECTED, message=killed_text(by, reason))
        conn.outbox.finish(encode(bye))

    def wallops(self, line: str) -> bool:
        """An operator's WALLOPS line (checked by the gateway: its sender is one), to
        this node's IRC clients with ``+w`` now and to the other nodes' by the stream.
        False: it reached this node's only (Redis is unreachable), which the gateway
        tells the operator (docs/CLUSTER.md, "Server operators")."""
        self._wallops_here(line)
        bus = self._b.bus
        if bus is not None and not bus.publish_operator({"a": "wallops", "l": line}):
            log.warning("a WALLOPS reached this node only: Redis is unreachable")
            return False
        return True

    def _wallops_here(self, line: str) -> None:
        data = f"{line}\r\n".encode()
        for conn in self._presence.roster():
            irc = conn.irc
            if irc is not None and irc.wallops:
                cast(IrcLines, conn.outbox).send_irc(data)

    def from_cluster(self, fields: dict[str, str], mine: bool) -> None:
        """An operator entry of the cluster's stream (module docstring); ``mine``: this
        node published it."""
        action = fields.get("a")
        if action == "kill":
            self._killed(fields)
        elif action == "wallops":
            if not mine:
                self._wallops_here(fields.get("l", ""))
        elif action == "oper":
            if not mine:
                with self._lock:
                    self._elsewhere.add(username_key(fields.get("u", "")))
        elif action == "deop":
            self.forget(fields.get("u", ""))  # logged in again on the operator's node
        else:
            log.error("an operator entry of an unknown kind on the stream: %r", fields)

    def _killed(self, fields: dict[str, str]) -> None:
        """A kill from the stream: the session it names ends if it is this node's and
        has not ended (module docstring)."""
        bus = self._b.bus
        name, by, node = fields.get("u", ""), fields.get("by", "?"), fields.get("to")
        if bus is None or node != bus.node:
            return  # another node's session (or, without "to", a malformed entry)
        conn = self._presence.online(username_key(name))
        session = fields.get("s", "")
        if conn is None or str(conn.num) != session:
            log.warning(
                "%s's kill of %s names session %s here, which has ended: nothing to end%s",
                by,
                name,
                session,
                "" if conn is None else f" ({conn!r} is a later session)",
            )
            return
        self.end(conn, by, fields.get("r") or None)
