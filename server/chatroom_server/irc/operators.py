"""Server operators on IRC (docs/IRC.md, "Operators"): OPER, KILL and WALLOPS, the
operator half of an IRC session (chatroom_server.irc.session mixes it in). KILL is the
server's ``kill`` command and WALLOPS goes through the server (chatroom_server.serverops),
so both reach every node of a cluster.

Who is one is decided by the server, never here: an O-line of the server's
configuration (chatroom_server.olines) makes the session that names it with its password
one until it ends; an account granted by ``chat-server admin grant`` is one in every
session (docs/PROTOCOL.md §Moderation). Each command asks the server again, so a
revoke holds at the next one.

Threads: the session's reader thread, as the session it belongs to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chatroom.moderation import KillCommand
from chatroom.protocol import ClientCommand, is_valid_username
from chatroom.rooms import MAX_REASON
from chatroom_server.irc.asked import Pending
from chatroom_server.irc.parse import HOST
from chatroom_server.irc.replies import Replies

if TYPE_CHECKING:
    pass

# Wrong O-line passwords one session may send; the next closes it (ERROR), so that a
# client cannot try passwords at its flood rate for as long as it likes.
MAX_OPER_FAILURES = 3


class OperatorCommands(Replies):
    """OPER, KILL, WALLOPS (module docstring); the session provides what is declared."""

    wallops: bool  # user mode +w: this client wants WALLOPS
    oper_failures: int
    pending: Pending  # what it asked the server, by request id (asked.py)

    def frame(self, command: ClientCommand) -> bool:
        raise NotImplementedError

    def prefix(self) -> str:
        raise NotImplementedError

    def is_oper(self) -> bool:
        """This session may use the operators' commands now: an O-line made it one, or
        its account is one (read now: a revoke holds)."""
        return self.conn.oper or self.server.is_server_operator(self.nick)

    def no_privileges(self) -> None:
        self.num("481", text="Permission Denied- You're not an IRC operator")

    def on_oper(self, params: list[str]) -> bool:
        """OPER NAME PASSWORD: 381 (and ``MODE nick +o``), 464 for a wrong password,
        491 for a name without an O-line that is not one's own operator account."""
        if not self.need(params, 2, "OPER"):
            return True
        got = self.server.oper(self.conn, params[0], params[1])
        if got == "ok":
            self.num("381", text="You are now an IRC operator")
            self.reply(f":{self.name} MODE {self.nick} :+o")
        elif got == "password":
            self.num("464", text="Password incorrect")
            self.oper_failures += 1
            if self.oper_failures >= MAX_OPER_FAILURES:
                self.reply(f"ERROR :Closing link: {HOST} (too many wrong OPER passwords)")
                return False
        elif got == "unavailable":
            self.num("491", text="The server cannot check that now: try again")
        else:
            self.num(
                "491",
                text="No O-lines for your host: none has that name, and only your own "
                "account can be a server operator (chat-server admin grant)",
            )
        return True

    def on_kill(self, params: list[str]) -> bool:
        """KILL nick [:reason]: the server's ``kill`` (chatroom_server.serverops checks
        and records it, once for every transport), which ends the session on whichever
        node has it; its departure is a QUIT to the others, as any. Answered with 481
        (not an operator) or 401 (nobody of that name online), render.py."""
        if not self.need(params, 1, "KILL"):
            return True
        target = params[0]
        if not is_valid_username(target):
            self.num("401", target, text="No such nick/channel")
            return True
        reason = self.text_param(f"KILL {target}", params[1] if len(params) > 1 else "")
        if reason is None:
            return True
        # IRC has no limit on a KILL's reason, the audit log has (docs/PROTOCOL.md).
        reason = reason[:MAX_REASON] or None
        rid = self.pending.ask("KILL", target)
        # False after killing oneself: the connection is finished; read nothing more.
        return self.frame(KillCommand(user=target, reason=reason, id=rid))

    def on_wallops(self, params: list[str]) -> bool:
        """WALLOPS :text from an operator, to the IRC clients with user mode +w on
        every node of a cluster (the sender too, if it has it); a NOTICE to the sender
        when it reached its own node's only."""
        if not self.need(params, 1, "WALLOPS"):
            return True
        if not self.is_oper():
            self.no_privileges()
            return True
        if not self.server.wallops(f":{self.prefix()} WALLOPS :{params[0]}"):
            # A cluster whose Redis is unreachable: said, not silently half done.
            self.reply(
                f":{self.name} NOTICE {self.nick} :WALLOPS reached this node's users only: "
                "the cluster is unreachable"
            )
        return True
