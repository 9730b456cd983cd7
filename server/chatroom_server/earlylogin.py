"""A login on the admission thread, before its connection has a thread.

The admission thread (chatroom_server.admission) offers a connection's first whole frame
to :meth:`EarlyLogin.early` (through ``FirstLook.first``): a returning user's login that
waits for nothing (a password the store remembers, no throttle, no cluster claim) runs
right there, and a new name's registration with a cheap hash begins there, the
connection held until the store's group commit has made the account durable
(``_register_soon``, ``_registered``). Everything else goes to the connection's thread,
which runs :class:`~chatroom_server.login.Login` as ever.

Its state: ``registrations`` (a count), the admission thread's alone. The throttles it
consults are the logins' (chatroom_server.login), each with its own lock
(chatroom_server.limits); names being registered are the presence's, under its lock
(``Presence.begin_registering``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec

from chatroom.errors import ProtocolError
from chatroom.protocol import (
    ClientCommand,
    ErrorCode,
    LoginCommand,
    RequestId,
    check_password,
    username_key,
    validate_command,
)
from chatroom_server.accounts import AccountExists, AccountStoreBusy

if TYPE_CHECKING:
    from chatroom_server.admission import Admission
    from chatroom_server.backends import Backends
    from chatroom_server.config import ServerConfig
    from chatroom_server.conn import Conn
    from chatroom_server.limits import LoginThrottle, WindowCounter
    from chatroom_server.presence import Presence
    from chatroom_server.replay import Replay

log = logging.getLogger(__name__)


# What ``EarlyLogin.early`` says of a first frame that is a registration it has begun:
# the connection is held (Admission.hold) until the account is durable.
HELD = "held"


# The session's own decoder (chatroom.protocol.decode_command's), without the diagnosis
# of a frame it cannot take: that frame goes to its thread, whose session answers it.
_COMMAND: msgspec.json.Decoder[ClientCommand] = msgspec.json.Decoder(ClientCommand)


class EarlyLogin:
    """The admission thread's logins (module docstring)."""

    def __init__(
        self,
        config: ServerConfig,
        backends: Backends,
        presence: Presence,
        replay: Replay,
        throttle: LoginThrottle,
        registrations: WindowCounter,
        admission: Admission[Conn],
        send_error: Callable[[Conn, str, str, RequestId | None], None],
    ) -> None:
        self._config = c = config
        self._b = backends
        self._presence = presence
        self._replay = replay
        self._throttle = throttle  # the logins' (Login), shared with their threads
        self._registrations = registrations  # likewise
        self._admission = admission
        self._send_error = send_error  # an error frame, behind its broadcasts
        self._clock = c.clock
        self._wall = c.wall_clock
        self.registrations = 0  # begun by _register_soon: the admission thread's
        # A committed registration's connection and its first frame's command, while
        # _registered hands it back to early(): the admission thread's alone.
        self._again: tuple[Conn, LoginCommand] | None = None

    def early(self, conn: Conn, frame: bytes) -> LoginCommand | str | None:
        """Admission thread: ``frame`` (a connection's first, whole) decoded, if it is a
        login it may run itself, on the spot: one that makes no trip to a store thread
        (a password the store remembers), is not slowed by the throttle, and needs no
        cluster claim. Such a login waits for nothing but locks held briefly; its
        replay, if any, is left to the connection's thread (``enter``). The caller
        hands the command to the session as decoded (``ServerSession.receive_decoded``):
        a frame is decoded once. Or ``HELD``: the first login of a new name, whose
        registration has begun here (``_register_soon``). None: its thread runs it."""
        store = self._b.store
        if store is None or self._b.bus is not None:
            return None
        again = self._again
        if again is not None and again[0] is conn:
            cmd: ClientCommand = again[1]  # a registration's, committed (_registered)
        else:
            try:
                cmd = _COMMAND.decode(frame)
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                # The session answers it, on the connection's thread. Nested too deeply,
                # a frame raises RecursionError (as protocol.decode_command knows), which
                # would end the admission thread, and every login with it.
                return None
        if not isinstance(cmd, LoginCommand) or cmd.password is None:
            return None
        key = username_key(cmd.username)
        if not store.remembered(cmd.username, cmd.password):
            return self._register_soon(conn, cmd, key)
        if self._replay.received(cmd.username):
            return None  # its login deletes inbox rows first: a commit, an fsync
        rooms = self._b.rooms
        if rooms is not None and rooms.may_kick_on_login(conn.ip):
            return None  # a room bans its address: kicks to store first (enter)
        per_address = not exempt(self._config, conn.ip)
        return cmd if self._throttle.clear(key, conn.ip, self._clock(), per_address) else None

    def _register_soon(self, conn: Conn, cmd: LoginCommand, key: str) -> str | None:
        """Admission thread: a login whose password the store does not remember. If
        its name has no account and the store hashes cheaply, the registration begins
        here, with every check it makes on a connection's thread (``verify``,
        ``_check_password``), and the connection is held (``HELD``) while the account
        waits for the group commit: no thread sleeps through the ``fsync``. When the
        account is durable the admission thread logs it in (``_registered``): login_ok
        follows the commit, so a crash in between leaves no client told of an account
        that is not there. Anything else (an account, a check that refuses, an IRC
        guest's name): None, and the connection's thread answers as ever."""
        store = self._b.store
        assert store is not None and cmd.password is not None
        if not store.registers_soon or conn.new_account:
            return None
        try:
            # The frame as its session would take it (a valid name, a password within
            # the limits...): nothing it would refuse is registered.
            validate_command(cmd, self._config.limits)
        except ProtocolError:
            return None  # its thread answers
        try:
            if store.find_here(cmd.username) is not None:
                return None  # a password to check: a trip to a store thread
        except AccountStoreBusy:
            return None  # its thread tries, and answers unavailable if it must
        gate, now = self._b.gate, self._clock()
        if gate is not None:
            try:
                seen = gate.at_login(conn.ip, cmd.username, self._wall(), cmd.id)
            except ProtocolError:
                return None  # banned: its thread says so
            if not seen.registrations_open:
                return None
        try:
            check_password(cmd.password, self._config.limits, cmd.id)
        except ProtocolError:
            return None
        limited = not exempt(self._config, conn.ip)
        if not self._throttle.clear(key, conn.ip, now, per_address=limited):
            return None
        if not self._presence.begin_registering(key):
            return None  # an IRC guest's nick
        if limited and not self._registrations.allow(conn.ip, now):
            self._presence.end_registering(key)
            return None  # too many from its address: its thread refuses it
        admission = self._admission

        def committed(error: Exception | None) -> None:
            # The committing store thread: the name is free for guests again (taken
            # by an account now, or not at all), and the rest is the admission thread's.
            self._presence.end_registering(key)
            admission.later(conn, lambda c: self._registered(c, error, cmd))

        try:
            store.register_soon(cmd.username, cmd.password, committed)
        except Exception:
            self._presence.end_registering(key)
            raise  # FirstLook.first: the login goes to its thread
        # Held only now: the hand-back (later) runs on this thread, after this returns.
        conn.in_login = True  # waiting for the server (the login timeout's sweep)
        admission.hold(conn)
        self.registrations += 1
        return HELD

    def _registered(self, conn: Conn, error: Exception | None, cmd: LoginCommand) -> None:
        """Admission thread: ``conn``'s registration (``_register_soon``) is durable
        (``error`` None) or refused. Durable: its login runs as a returning user's
        would, here (its password is remembered now), and says ``new_user``. Taken by
        someone else (AccountExists): the login goes to a thread, which checks the
        password against the winner's account as any login's (``bad_credentials``
        unless it is the same). Not stored: ``unavailable``, and the client may try
        again."""
        conn.in_login = False
        if error is None:
            conn.new_account = True
        elif not isinstance(error, AccountExists):
            text = f"try again: {error}"
            self._send_error(conn, ErrorCode.UNAVAILABLE, text, cmd.id)
            conn.unread = conn.unread[conn.unread.find(b"\n") + 1 :]  # answered
            self._admission.again(conn)
            return
        # Its first frame, the command decoded before the commit: not decoded again.
        self._again = (conn, cmd)
        try:
            self._admission.again(conn)  # and, at once, early() for the same frame
        finally:
            self._again = None


def exempt(config: ServerConfig, ip: str) -> bool:
    """Whether ``ip`` is exempt from the per-address limits (--exempt-loopback)."""
    return config.exempt_loopback and (ip.startswith("127.") or ip == "::1")
