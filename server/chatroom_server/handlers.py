"""The client commands' handlers: what each command of the table does.

:data:`chatroom_server.commands.COMMANDS` names, for each command, a method of
:class:`Handlers`; the table's :class:`~chatroom_server.commands.Dispatch` (run by
chatroom_server.runner) checks the login and flushes the pending batch before it calls
one. A handler takes the connection and the command, runs on that connection's reader
thread, and answers through :class:`~chatroom_server.replies.Replies` so that the answer
keeps request order; ``_login`` and ``_exit`` return whether to keep the connection.
To add a command: docs/ARCHITECTURE.md, "Adding a command".

The pm handler (``_public``) is the hot path: it encodes the broadcast once and appends
it to the read's batch, which the reader hands to the fan-out at the end of the read.
No state of its own: what it reads belongs to the presence (under its lock), the stores
(each with its own) and the connection (its reader thread's).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from chatroom.botcommands import BotCommandsCommand
from chatroom.errors import ProtocolError, RequestId
from chatroom.moderation import (
    AuditCommand,
    AuditEntry,
    AuditLog,
    KillCommand,
    ModerationCommand,
)
from chatroom.protocol import (
    Ack,
    Broadcast,
    Bye,
    ByeReason,
    DirectMessage,
    DmCommand,
    ErrorCode,
    ExitCommand,
    HistoryCommand,
    LoginCommand,
    PingCommand,
    PmCommand,
    Pong,
    UserList,
    UsersCommand,
    encode,
    username_key,
)
from chatroom.rooms import LOBBY, RoomCommand, room_key
from chatroom.whois import Whois, WhoisCommand
from chatroom_server.accounts import AccountStoreBusy
from chatroom_server.botcommands import bot_commands_reply
from chatroom_server.conn import UNUSED
from chatroom_server.fanitems import Direct
from chatroom_server.frames import encoded
from chatroom_server.messagelog import NewMessage

if TYPE_CHECKING:
    from chatroom_server.backends import Backends
    from chatroom_server.botcommands import BotDirectory
    from chatroom_server.config import ServerConfig
    from chatroom_server.conn import Conn
    from chatroom_server.login import Login
    from chatroom_server.presence import Presence
    from chatroom_server.replay import Replay
    from chatroom_server.replies import Replies
    from chatroom_server.serverops import ServerOps

log = logging.getLogger(__name__)

# Frames that never change, encoded once.
_ACK_PM_EVENT = Ack(command="pm")
_ACK_PM = encode(_ACK_PM_EVENT)
_PONG = encode(Pong())
_BYE_EXIT = encode(Bye(reason=ByeReason.EXIT))


class Handlers:
    """The handlers of the command table (module docstring)."""

    def __init__(
        self,
        config: ServerConfig,
        backends: Backends,
        presence: Presence,
        logins: Login,
        replay: Replay,
        replies: Replies,
        bots: BotDirectory,
        ops: ServerOps,
    ) -> None:
        self._config = config
        self._ops = ops  # kill (chatroom_server.serverops)
        self._b = backends
        self._presence = presence
        self._logins = logins
        self._replay = replay
        self._replies = replies
        self._bots = bots  # docs/PROTOCOL.md §Bot commands (its own lock)
        self._wall: Callable[[], float] = config.wall_clock

    def is_server_operator(self, name: str) -> bool:
        """Whether ``name`` is a server operator, read from the database now (whois,
        IRC WHOIS's 313); on a cluster's database too; or has a session that an IRC
        O-line made one (chatroom_server.olines), on this node or another
        (chatroom_server.serverops). Raises AccountStoreBusy."""
        key = username_key(name)
        online = self._presence.online(key)
        if online is not None and online.oper:
            return True
        if online is None and self._ops.opered_elsewhere(key):
            return True  # an O-line's session on another node (docs/CLUSTER.md)
        gate = self._b.gate
        return gate is not None and gate.is_operator(name)

    def operators_online(self) -> frozenset[str]:
        """The username keys of the server operators online here (IRC WHO's ``*``): one
        read of the operators table, and the sessions O-lines made operators. When the
        database cannot answer, the latter only (a flag in a listing is not worth an
        error)."""
        opered = {c.username for c in self._presence.roster() if c.oper and c.username}
        keys = {username_key(n) for n in opered} | self._ops.opered_keys()
        gate = self._b.gate
        if gate is not None:
            try:
                keys |= gate.operator_keys()
            except AccountStoreBusy as exc:
                log.warning("cannot read the server operators now: %s", exc)
        return frozenset(keys)

    def _dm(self, conn: Conn, cmd: DmCommand) -> None:
        if not (self._config.irc_guests and self._guest_direct(conn, cmd)):
            self._direct(conn, cmd)

    def _users(self, conn: Conn, cmd: UsersCommand) -> None:
        rid = cmd.id
        if conn.deltas:  # the list its deltas apply to, when the reply goes out
            self._b.fanout.after(conn, lambda: self._presence.publisher.reply(conn, rid))
        else:
            names = self._presence.names
            self._b.fanout.after(
                conn, lambda: conn.outbox.send(encode(UserList(users=names(), id=rid)))
            )

    def _audit(self, conn: Conn, cmd: AuditCommand) -> None:
        """The moderation audit log, for server operators (docs/PROTOCOL.md
        §Moderation). Two database reads on this reader thread, no lock of ours."""
        assert conn.username is not None
        gate = self._b.gate
        # start() opens the gate before any connection, on either database: a cluster
        # node's is PostgreSQL's, where every node's audit records are (docs/CLUSTER.md).
        assert gate is not None
        try:
            if not conn.oper and not gate.is_operator(conn.username):
                why = "the audit is for server operators"
                raise ProtocolError(ErrorCode.NOT_OPERATOR, why, cmd.id)
            rows = gate.audit(cmd.room, cmd.limit)
        except AccountStoreBusy as exc:  # the database cannot answer now
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"try again: {exc}", cmd.id) from exc
        entries = tuple(
            AuditEntry(
                seq=seq,
                ts=ts,
                by=str(actor),
                action=str(action),
                user=None if target is None else str(target),
                room=None if room is None else str(room),
                reason=None if reason is None else str(reason),
                detail=json.loads(str(detail)) if detail else {},
            )
            for seq, ts, actor, action, target, room, reason, detail in rows
        )
        self._replies.reply(conn, encode(AuditLog(entries=entries, id=cmd.id)))

    def _kill(self, conn: Conn, cmd: KillCommand) -> bool:
        """A server operator ends a session, on whichever node has it (docs/PROTOCOL.md
        §Moderation; chatroom_server.serverops checks and records it). The ack goes
        first, then the session ends: for a kill of oneself, ack then ``bye``. Whether
        to keep reading this connection (not after killing oneself)."""
        assert conn.username is not None
        name, end = self._ops.kill(conn, cmd)
        self._replies.reply(conn, encode(Ack(command="kill", to=name, id=cmd.id)))
        if username_key(name) != username_key(conn.username):
            end()
            return True
        if conn.done == conn.handed:
            end()
        else:
            self._b.fanout.after(conn, end)  # behind the ack, which waits for the batch
        return False

    def _ping(self, conn: Conn, cmd: PingCommand) -> None:
        self._replies.reply(conn, _PONG if cmd.id is None else encode(Pong(id=cmd.id)))

    def _room(self, conn: Conn, cmd: RoomCommand | ModerationCommand) -> None:
        """A room command (docs/PROTOCOL.md §Rooms): unknown to a connection without
        rooms, as to a version-1 server."""
        if not conn.rooms or self._b.rooms is None:
            tag = cmd.__struct_config__.tag
            raise ProtocolError(ErrorCode.UNKNOWN_COMMAND, f"unknown command {tag!r}", cmd.id)
        self._b.rooms.command(conn, cmd)

    def _bot_commands(self, conn: Conn, cmd: BotCommandsCommand) -> None:
        """docs/PROTOCOL.md §Bot commands (chatroom_server.botcommands)."""
        self._replies.reply(conn, bot_commands_reply(self._bots, conn, cmd))

    def _whois(self, conn: Conn, cmd: WhoisCommand) -> None:
        """docs/PROTOCOL.md §whois. Reads the operators table now, at every ask, so a
        revoke shows at the next one (no cache here to go stale)."""
        target, name = self._named(cmd.user, cmd.id)
        try:
            oper = self.is_server_operator(name)
        except AccountStoreBusy as exc:  # the database cannot answer now
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"try again: {exc}", cmd.id) from exc
        reply = Whois(user=name, online=target is not None, server_operator=oper, id=cmd.id)
        self._replies.reply(conn, encode(reply))

    def _named(self, user: str, rid: RequestId) -> tuple[Conn | None, str]:
        """``user``'s session here, if online, and their name as spelled at registration
        (a whois's, a DM's): ``unknown_user`` if nobody online or registered has it."""
        assert self._b.store is not None
        target = self._presence.online(username_key(user))
        if target is not None and target.username is not None:
            return target, target.username
        try:
            account = self._b.store.get(user)
        except AccountStoreBusy as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"try again: {exc}", rid) from exc
        if account is None:
            raise ProtocolError(ErrorCode.UNKNOWN_USER, f"no user named {user!r}", rid)
        return None, account.name

    def _exit(self, conn: Conn, cmd: ExitCommand) -> bool:
        self._replay.replay_received(conn)
        self._b.fanout.after(conn, lambda: conn.outbox.finish(_BYE_EXIT))  # nothing follows
        return False

    def _login(self, conn: Conn, cmd: LoginCommand) -> bool:
        """docs/PROTOCOL.md §login (chatroom_server.login)."""
        return self._logins.login(conn, cmd)

    def _history(self, conn: Conn, cmd: HistoryCommand) -> None:
        """docs/PROTOCOL.md §history (chatroom_server.replay)."""
        self._replay.history(conn, cmd)

    def _public(self, conn: Conn, cmd: PmCommand) -> None:
        assert conn.username is not None
        if not conn.announced:
            self._presence.announce(conn)
        # Encoded once; every recipient gets the same bytes. Queued in the batch of this
        # read: the public messages that arrived in one recv() go out as one send() per
        # recipient (Replies.flush_batch), so under load, when frames queue up, the
        # per-recipient syscall and outbox lock are paid once per batch instead of once per
        # message. With the message log the fan-out adds each one's seq once it is stored.
        # A room's message (§Rooms, rooms need the log) is checked, stored and sent to its
        # members by the same fan-out pass (chatroom_server.fanout, "rooms").
        room = cmd.room if conn.rooms and cmd.room is not None else None
        if room is not None and room_key(room) == LOBBY:
            room = None
        ts = self._wall()
        if conn.batch is UNUSED:  # the first message of this read (see Conn)
            conn.batch, conn.acks, conn.msgs, conn.rids, conn.events = [], [], [], [], []
        frame = Broadcast(
            sender=conn.username, message=cmd.message, ts=ts, room=room, notice=cmd.notice
        )
        conn.batch.append(encode(frame))
        if room is None and cmd.id is None:
            ack, ack_frame = _ACK_PM_EVENT, _ACK_PM
        else:
            ack = Ack(command="pm", room=room, id=cmd.id)
            ack_frame = encode(ack)
        conn.acks.append(ack_frame)
        conn.events.append((frame, ack))  # for the transports that render them (frames.py)
        if self._b.log is not None:
            conn.msgs.append(NewMessage(conn.username, None, cmd.message, ts, cmd.cid, room=room))
            conn.rids.append(cmd.id)

    def _direct(self, conn: Conn, cmd: DmCommand) -> None:
        assert conn.username is not None and self._b.store is not None
        if not conn.announced:
            self._presence.announce(conn)
        key = username_key(cmd.to)
        target, to = self._named(cmd.to, cmd.id)
        if target is None and self._b.log is None:
            raise ProtocolError(ErrorCode.USER_OFFLINE, f"{cmd.to} is not online", cmd.id)
        ts = self._wall()
        dm_event = DirectMessage(
            sender=conn.username, to=to, message=cmd.message, ts=ts, notice=cmd.notice
        )
        ack_event = Ack(command="dm", to=to, id=cmd.id)
        if self._b.log is not None:
            # Stored first; whether the recipient is online is decided then (fanitems.Direct).
            msg = NewMessage(conn.username, to, cmd.message, ts, cmd.cid)
            events = (dm_event, ack_event)
            dm, ack = encode(dm_event), encode(ack_event)
            self._b.fanout.direct(Direct(conn, dm, ack, msg, cmd.id, key, events))
            return
        assert target is not None
        dm, ack = encoded(dm_event), encoded(ack_event)

        def deliver() -> None:  # behind this sender's broadcasts still queued, if any
            target.outbox.send(dm)
            conn.outbox.send(ack)

        self._b.fanout.after(conn, deliver)

    def _guest_direct(self, conn: Conn, cmd: DmCommand) -> bool:
        """--irc-guests: a DM from or to a guest, delivered live and never stored: a
        guest is one session, and nothing said to it or by it in private may reach
        whoever holds its nick later (a guest, or an account of that name), through
        history, a replay or offline DMs. False: no guest on either side (the usual
        path, ``_direct``). Like a DM with ``--history off``: no seq, not queued for
        someone offline."""
        assert conn.username is not None and self._b.store is not None
        key = username_key(cmd.to)
        target, holder = self._presence.holders(key)
        from_guest = conn.irc is not None and conn.irc.guest is not None
        if target is None:
            # Nobody online by that name. A name a guest holds (arriving) has no
            # account; else ask the accounts here, not in _direct: a guest claiming the
            # name meanwhile would be found there, and the DM stored.
            try:
                account = None if holder is not None else self._b.store.get(cmd.to)
            except AccountStoreBusy as exc:
                raise ProtocolError(ErrorCode.UNAVAILABLE, f"try again: {exc}", cmd.id) from exc
            if account is None:
                raise ProtocolError(ErrorCode.UNKNOWN_USER, f"no user named {cmd.to!r}", cmd.id)
            if not from_guest:
                return False  # for an account, to wait for its next login: the usual path
            raise ProtocolError(
                ErrorCode.USER_OFFLINE,
                f"{account.name} is not online here; a guest's direct messages are "
                "delivered live only",
                cmd.id,
            )
        if not from_guest and target is not holder:
            return False  # between two accounts' sessions: the usual path
        if not conn.announced:
            self._presence.announce(conn)
        to = target.username
        assert to is not None
        ts = self._wall()
        dm = encoded(
            DirectMessage(
                sender=conn.username, to=to, message=cmd.message, ts=ts, notice=cmd.notice
            )
        )
        ack = encoded(Ack(command="dm", to=to, id=cmd.id))

        def deliver() -> None:  # behind this sender's broadcasts still queued, if any
            target.outbox.send(dm)
            conn.outbox.send(ack)

        self._b.fanout.after(conn, deliver)
        return True
