"""Login: passwords, registrations, IRC guests, and the session's beginning.

:class:`Login` runs on the reader thread of the connection logging in: the ``login``
command (docs/PROTOCOL.md §login), IRC's SASL check, guest nicks and OPER (docs/IRC.md).
It checks the throttles (chatroom_server.limits) before a password is hashed, hashes it
outside every lock (chatroom_server.accounts), registers a new name, and then begins the
session (``enter``): into the roster (chatroom_server.presence) and, with the message
log, the replay (chatroom_server.replay), between two fan-out passes so that login_ok's
seq is the login's cut. Or on the admission thread, before the connection has a thread
(``early``, chatroom_server.earlylogin): a returning user's login that waits for
nothing, and, with a cheap hash, a new name's registration, whose login_ok it sends once
the store's group commit has made the account durable.

Its own state: ``_throttle`` and ``_registrations``, each with its own lock
(chatroom_server.limits). Names held by guests and registrations in progress are the
presence's, under its lock (``Presence.claim_guest``, ``begin_registering``).
"""

from __future__ import annotations

import logging
import math
import select
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from chatroom.errors import ProtocolError
from chatroom.protocol import (
    ErrorCode,
    Feature,
    LoginCommand,
    PasswordRequired,
    RequestId,
    check_password,
    encode,
    username_key,
)
from chatroom_server import olines
from chatroom_server.accounts import Account, AccountExists, AccountStoreBusy
from chatroom_server.cluster import ClusterUnavailable
from chatroom_server.earlylogin import EarlyLogin, exempt
from chatroom_server.limits import LoginAttempt, LoginThrottle, Throttled, WindowCounter
from chatroom_server.session import BannedError

if TYPE_CHECKING:
    from chatroom_server.admission import Admission
    from chatroom_server.backends import Backends
    from chatroom_server.config import ServerConfig
    from chatroom_server.conn import Conn
    from chatroom_server.irc import IrcSession
    from chatroom_server.metrics import Tally
    from chatroom_server.presence import Presence
    from chatroom_server.replay import Replay
    from chatroom_server.servergate import LoginGate

log = logging.getLogger(__name__)


class Login:
    """Logins of one server (module docstring)."""

    def __init__(
        self,
        config: ServerConfig,
        backends: Backends,
        presence: Presence,
        replay: Replay,
        stats: Tally,
        stopping: threading.Event,
        admission: Admission[Conn],
        let_go: Callable[[Conn], None],
        send_error: Callable[[Conn, str, str, RequestId | None], None],
    ) -> None:
        self._config = c = config
        self._b = backends
        self._presence = presence
        self._replay = replay
        self._stats = stats
        self._stopping = stopping
        self._admission = admission
        self._let_go = let_go  # its login slot, if it holds one, to the next in line
        self._send_error = send_error  # an error frame, behind its broadcasts
        self._clock = c.clock
        self._wall = c.wall_clock
        self._throttle = LoginThrottle(
            c.login_free_failures,
            cap=c.login_backoff_max,
            address_free=c.login_address_free,
            account_burst=c.login_account_burst,
            account_gap=c.login_account_gap,
        )
        self._registrations = WindowCounter(c.registrations_per_ip, c.registration_window)
        # The logins the admission thread runs itself (chatroom_server.earlylogin).
        self._early = EarlyLogin(
            c,
            backends,
            presence,
            replay,
            self._throttle,
            self._registrations,
            admission,
            send_error,
        )
        self.early = self._early.early
        # Sessions begun by an early login (_count_early): the admission thread's alone.
        self.early_logins = 0

    def _count_early(self, conn: Conn) -> None:
        """A session begins on the admission thread (``early``): counted before its
        login_ok is queued (a fan-out pass may send it as soon as it is), so whoever
        hears login_ok finds it counted. Refused logins are not logins
        (``FirstLook.early_refused``)."""
        if conn.early:
            self.early_logins += 1

    @property
    def early_registrations(self) -> int:
        """Registrations begun on the admission thread (EarlyLogin.registrations)."""
        return self._early.registrations

    def exempt(self, ip: str) -> bool:
        """Loopback, with --exempt-loopback: no per-address limits."""
        return exempt(self._config, ip)

    def login(self, conn: Conn, cmd: LoginCommand) -> bool:
        conn.in_login = True
        try:
            return self._check_login(conn, cmd)
        except AccountStoreBusy as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"try again: {exc}", cmd.id) from exc
        finally:
            conn.in_login = False

    def _check_login(self, conn: Conn, cmd: LoginCommand) -> bool:
        verdict = self.verify(conn, cmd)
        if isinstance(verdict, bool):
            return verdict  # refused (or asked for a password): keep the connection?
        account, new_user = verdict
        conn.deltas = Feature.USERS_DELTA in cmd.features
        # Only with users_delta: a v1 client gets every list whole anyway (PROTOCOL.md).
        conn.lazy_users = conn.deltas and Feature.LAZY_USERS in cmd.features
        conn.rooms = self._b.rooms is not None and Feature.ROOMS in cmd.features
        return self.enter(conn, account.name, new_user, cmd)

    def verify(self, conn: Conn, cmd: LoginCommand) -> tuple[Account, bool] | bool:
        """The account and whether it is new, once the password is right (a new name is
        registered); else what was answered and whether to keep the connection."""
        assert self._b.store is not None
        if conn.username is not None:
            raise ProtocolError(
                ErrorCode.ALREADY_LOGGED_IN, f"already logged in as {conn.username}", cmd.id
            )
        seen = None  # every transport's logins and registrations come here
        if self._b.gate is not None:
            seen = self._b.gate.at_login(conn.ip, cmd.username, self._wall(), cmd.id)
        if cmd.password is None:
            # The step where an interactive client learns to ask for a new password twice.
            account = self._b.store.lookup(cmd.username)
            name = account.name if account else cmd.username
            lim = self._config.limits
            new = account is None
            conn.outbox.send(
                encode(
                    PasswordRequired(
                        username=name,
                        new_user=new,
                        min_password=lim.min_password if new else None,
                        max_password=lim.max_password if new else None,
                        id=cmd.id,
                    )
                )
            )
            return True
        # Names are ASCII and unique ignoring case, so this is the account's key too.
        key = username_key(cmd.username)
        attempt = self._throttle.begin(
            key, conn.ip, self._clock(), per_address=not self.exempt(conn.ip)
        )
        if isinstance(attempt, Throttled):
            # Only an existing account's failures throttle; it is not even looked up.
            conn.failed_logins += 1
            self._stats.add("login_failures")
            self._send_error(
                conn, ErrorCode.RATE_LIMITED, self._throttled_text(cmd, conn, attempt), cmd.id
            )
            return conn.failed_logins < self._config.max_failed_logins
        try:
            return self._check_password(conn, cmd, attempt, seen)
        finally:
            attempt.close(self._clock())  # a check without a verdict counts for nothing

    @staticmethod
    def _throttled_text(cmd: LoginCommand, conn: Conn, refused: Throttled) -> str:
        wait = math.ceil(refused.wait)
        if refused.scope == "address":
            return f"too many wrong passwords from {conn.ip}; try again in {wait} s"
        if refused.scope == "checking":
            return f"{cmd.username}'s password is being checked already; try again in {wait} s"
        return f"too many wrong passwords for {cmd.username} from {conn.ip}; try again in {wait} s"

    def _check_password(
        self, conn: Conn, cmd: LoginCommand, attempt: LoginAttempt, seen: LoginGate | None
    ) -> tuple[Account, bool] | bool:
        """``verify`` once the throttle let the check through (limits.py). ``seen``: what
        the gate read before the password (ServerGate.at_login), decided on only now."""
        assert self._b.store is not None and cmd.password is not None
        # Past the account's ceiling the check waits for its turn: slowed, not refused.
        if attempt.delay > 0 and conn.early:
            # Slowed since ``early`` looked (wrong passwords from elsewhere meanwhile):
            # the admission thread must not wait, so this client tries again.
            raise AccountStoreBusy("the account's password checks are slowed")
        if attempt.delay > 0 and self._stopping.wait(attempt.delay):
            raise AccountStoreBusy("the server is stopping")
        account, right = self._b.store.authenticate(cmd.username, cmd.password)
        # Registered by this connection's first login, on the admission thread
        # (_register_soon), and committed since: this login is its registration's.
        new_user = account is not None and right and conn.new_account
        if account is None and conn.early:
            # Gone since ``early`` found it remembered (deleted meanwhile): a
            # registration waits for its commit, which the admission thread must not.
            raise AccountStoreBusy("the account changed during the login")
        if account is None:
            if seen is not None and not seen.registrations_open:
                why = "this server takes no new accounts for now; try again later"
                raise ProtocolError(ErrorCode.REGISTRATION_CLOSED, why, cmd.id)
            check_password(cmd.password, self._config.limits, cmd.id)
            now = self._clock()
            if not self.exempt(conn.ip) and not self._registrations.allow(conn.ip, now):
                raise ProtocolError(
                    ErrorCode.RATE_LIMITED,
                    f"too many new accounts from {conn.ip}; try again later",
                    cmd.id,
                )
            # Its commit is shared with every registration queued meanwhile, so let
            # the next in line get that far too while this one waits, asleep
            # (accounts.py, admission.py).
            self._let_go(conn)
            account, new_user, right = self._register(cmd)
            # A commit wakes its whole group at once: back in line for the rest.
            conn.slot = self._admission.enter(self._config.login_timeout)
        if not new_user and not right:
            attempt.failed(self._clock())
            conn.failed_logins += 1
            self._stats.add("login_failures")
            self._send_error(conn, ErrorCode.BAD_CREDENTIALS, "wrong username or password", cmd.id)
            if conn.failed_logins >= self._config.max_failed_logins:
                log.info("closing %r after %d failed logins", conn, conn.failed_logins)
                return False
            return True
        if not new_user:
            attempt.succeeded(self._clock())
            # Told once the password is right: a guess learns nothing of a ban.
            # Its key is cmd.username's, which seen's ban was read by.
            ban = None if seen is None else seen.banned(self._wall())
            if ban is not None:
                raise BannedError(ban.text(), cmd.id, ban.reason, ban.expires)
        return account, new_user

    def _register(self, cmd: LoginCommand) -> tuple[Account, bool, bool]:
        """A new name's account: (the account, whether this login created it, whether
        the password is the account's). Not while an IRC guest holds the name, here or
        on another node (``unavailable``): the guest checked that no account has it, and
        its session is the one with that name until it leaves (docs/IRC.md)."""
        assert self._b.store is not None and cmd.password is not None
        key = username_key(cmd.username)
        if not self._presence.begin_registering(key):
            raise ProtocolError(ErrorCode.UNAVAILABLE, _guest_holds(cmd.username), cmd.id)
        bus = self._b.bus
        marked = False
        try:
            if bus is not None:
                try:
                    marked = bus.begin_registration(cmd.username)
                except ClusterUnavailable as exc:
                    raise ProtocolError(ErrorCode.UNAVAILABLE, f"try again: {exc}", cmd.id) from exc
                if not marked:
                    raise ProtocolError(ErrorCode.UNAVAILABLE, _guest_holds(cmd.username), cmd.id)
            try:
                return self._b.store.register(cmd.username, cmd.password), True, True
            except AccountExists:  # lost a registration race: the winner's password?
                account, right = self._b.store.authenticate(cmd.username, cmd.password)
                assert account is not None
                return account, False, right
        finally:
            if marked:
                assert bus is not None
                bus.end_registration(cmd.username)
            self._presence.end_registering(key)

    def guest_login(self, conn: Conn, name: str) -> bool | None:
        """--irc-guests: a session without an account under a nick no account has
        (None: it has one, log in as usual). The session is like any other (the room,
        history, DMs while online) but nothing is registered, so another guest may use
        the nick after it leaves. A guest is one session (docs/IRC.md):

        - its nick is checked and claimed in one step: held in ``Presence.guests`` (and, in a
          cluster, in Redis) from the moment no session had it, *then* checked against
          the accounts, while registrations of that name are refused; so a name
          registered meanwhile is either seen here or never registered, and a guest
          never takes over an account's session, nor one guest another's (433);
        - its DMs are delivered live and never stored (the server's ``_guest_direct``)."""
        assert self._b.store is not None and conn.irc is not None
        irc = conn.irc
        try:
            if self._b.store.get(name) is not None:
                return None  # the common case for an account, with nothing claimed
            if self._b.gate is not None:  # as every login's (_verify_login)
                self._b.gate.check_address(conn.ip, self._wall(), "login")
        except ProtocolError as exc:
            irc.reply(f"ERROR :Closing link: chatroom ({exc.message})")
            return False
        except AccountStoreBusy as exc:
            irc.reply(f"ERROR :Closing link: chatroom (try again: {exc})")
            return False
        key = username_key(name)
        if not self._presence.claim_guest(key, conn, lambda c: _hung_up(c.sock)):
            return self._nick_in_use(irc, name)
        bus = self._b.bus
        claimed = False
        try:
            if bus is not None:
                try:
                    claimed = bus.claim_guest(name, str(conn.num))
                except ClusterUnavailable as exc:
                    irc.reply(f"ERROR :Closing link: chatroom (try again: {exc})")
                    return False
                if not claimed:  # a session, a guest or a registration on another node
                    return self._nick_in_use(irc, name)
            try:
                # Again, now that no registration can begin: one may have ended meanwhile.
                if self._b.store.get(name) is not None:
                    return None
            except AccountStoreBusy as exc:
                irc.reply(f"ERROR :Closing link: chatroom (try again: {exc})")
                return False
            irc.guest = key
            # Guest rooms (docs/PROTOCOL.md §Guest rooms) live on one node: none in a cluster.
            conn.guest = conn.rooms = self._b.rooms is not None and bus is None
            features = (Feature.USERS_DELTA.value,) + ((Feature.ROOMS.value,) * conn.rooms)
            cmd = LoginCommand(username=name, features=features, id=irc.pending.ask("login"))
            conn.deltas = True
            conn.in_login = True
            try:
                return self.enter(conn, name, False, cmd)
            except ProtocolError as exc:
                self._send_error(conn, exc.code, exc.message, exc.request_id)
                return False
            finally:
                conn.in_login = False
        finally:
            if bus is not None and claimed:
                if conn.username is None:
                    bus.release(name)  # claimed, but no session began
                bus.settled(name)
            if conn.username is None:
                irc.guest = None
                self._presence.release_guest(conn, key)

    def rename(self, conn: Conn, new: str, done: Callable[[], None]) -> str:
        """--irc-guests: a guest's NICK after registration (docs/IRC.md): ``ok`` (and
        ``done`` run, on this thread, once the session is ``new``'s and before anyone
        hears of it), ``in_use`` (a session, a guest, a registration or an account has
        the name: 433), ``banned:ROOM`` (a room the guest is in bans ``new``: 435, as
        Ergo's ERR_BANNICKCHANGE, or the nick would walk past the ban), or why not
        (``unavailable``; a cluster, whose guests' names are claimed in Redis, renames
        none). ``new`` is claimed as a guest's nick is, in
        one step before the accounts are asked, so no registration slips between;
        the old name is free at once."""
        assert self._b.store is not None and conn.irc is not None and conn.username
        if self._b.bus is not None:
            return "a guest keeps its nick on a cluster"
        key = username_key(new)
        claimed = key != username_key(conn.username)
        if claimed and not self._presence.claim_guest(key, conn, lambda c: _hung_up(c.sock)):
            return "in_use"
        rooms = self._b.rooms
        try:
            if claimed and self._b.store.get(new) is not None:
                return "in_use"
            if not self._b.fanout.settle(conn, self._config.shutdown_grace):
                return "unavailable"  # its earlier messages go first, under the old name

            banned: list[str] = []

            def commit() -> None:
                old = conn.username
                assert old is not None
                if rooms is not None:
                    room = rooms.banning_room(old, new)
                    if room is not None:
                        banned.append(room)
                        return
                self._presence.rename_guest(conn, new)
                done()
                if rooms is not None:
                    rooms.renamed(old, new)

            self._b.fanout.exclusive(commit)
            if banned:
                return f"banned:{banned[0]}"
        except (AccountStoreBusy, TimeoutError) as exc:
            log.warning("%s: cannot rename to %s: %s", conn.username, new, exc)
            return "unavailable"
        finally:
            if claimed and conn.username != new:
                self._presence.release_guest(conn, key)
        return "ok"

    @staticmethod
    def _nick_in_use(irc: IrcSession, name: str) -> bool:
        # Unlike a login, a guest proves nothing that would let it take a session
        # over: the nick is in use, as on any IRC server.
        irc.num("433", name, text="Nickname is already in use")
        irc.nick = "*"  # registration waits for another NICK
        return True

    def sasl(self, conn: Conn, name: str, password: str) -> bool | None:
        """SASL: whether ``password`` is ``name``'s (registering a new name, as a login
        does), with the login's throttles; None when the connection must close. The
        session itself begins at registration (IRC's CAP END). Every False has sent an
        error frame (its id asked ``sasl``), which the gateway answers with 904 and its
        reason."""
        assert conn.irc is not None
        cmd = LoginCommand(username=name, password=password, id=conn.irc.pending.ask("sasl"))
        conn.in_login = True
        try:
            verdict = self.verify(conn, cmd)
        except ProtocolError as exc:
            self._send_error(conn, exc.code, exc.message, exc.request_id)
            return False
        except AccountStoreBusy as exc:
            self._send_error(conn, ErrorCode.UNAVAILABLE, f"try again: {exc}", cmd.id)
            return False
        finally:
            conn.in_login = False
        if isinstance(verdict, bool):
            return False if verdict else None
        return True

    def oper(self, conn: Conn, name: str, password: str) -> str:
        """IRC OPER (chatroom_server.irc.session.Core.oper): ``ok``, ``password`` (wrong),
        ``none`` (neither an O-line nor one's own operator account) or ``unavailable``.
        An O-line (chatroom_server.olines) first, for any session, guests too: it makes
        this session a server operator. Else one's own account, granted by ``chat-server
        admin grant``, whose password its client knows (no throttle is needed for that;
        the gateway closes a session after a few wrong O-line passwords)."""
        verdict = olines.check(self._config.irc_opers, name, password)
        if verdict == "ok":
            conn.oline = name
            conn.oper = True
            log.warning("%r is a server operator by the O-line %s", conn, name)
            return "ok"
        if verdict == "password":
            log.warning("%r: wrong password for the O-line %s", conn, name)
            return "password"
        user = conn.username
        if conn.guest or user is None or username_key(name) != username_key(user):
            return "none"
        assert self._b.store is not None
        gate = self._b.gate
        try:
            account, right = self._b.store.authenticate(user, password)
            if account is None or not right:
                return "password"
            return "ok" if gate is not None and gate.is_operator(account.name) else "none"
        except AccountStoreBusy as exc:
            log.warning("OPER: cannot read the accounts now: %s", exc)
            return "unavailable"

    def enter(self, conn: Conn, name: str, new_user: bool, cmd: LoginCommand) -> bool:
        """The session begins: login_ok, the roster, and with the message log the replay
        (docs/PROTOCOL.md §Resume, §Offline DMs); False closes the connection."""
        if self._b.log is None:
            if _abandoned(conn):
                return False
            self._count_early(conn)
            self._presence.begin(conn, name, new_user, cmd.id)()
            return True
        self._replay.clear_received(name)
        if self._b.rooms is not None:
            # A member of a room that bans the address they come from is put out of it
            # before the session begins (docs/PROTOCOL.md §Bans by address).
            self._b.rooms.kick_on_login(name, conn.ip)
        bus = self._b.bus
        if bus is not None:
            self._replay.catch_up(cmd)
            # The catch-up may have waited for seconds, long enough for a client to
            # give up (docs/RELIABILITY.md F7); a claim ends the session on any node.
            if _abandoned(conn):
                return False
            try:
                # One session per user in the whole cluster: the node that had it ends
                # it with bye session_replaced when it reads our claim.
                bus.claim(name, str(conn.num))
            except ClusterUnavailable as exc:
                raise ProtocolError(ErrorCode.UNAVAILABLE, f"try again: {exc}", cmd.id) from exc
        try:
            # Between two fan-out passes: login_ok's seq is the last message handed to
            # the roster without us, and every later one reaches us live.
            begun, plan = self._b.fanout.exclusive(
                lambda: self._begin_logged(conn, name, new_user, cmd)
            )
        except TimeoutError as exc:
            if bus is not None and conn.username is None:
                bus.release(name)  # claimed, but the session never began
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"try again: {exc}", cmd.id) from exc
        finally:
            if bus is not None:
                bus.settled(name)
        if begun is None:
            if bus is not None and self._presence.online(username_key(name)) is None:
                # Claimed, and another node's session of the user is ending already:
                # the user has none now, and the cluster must not list one. (A session
                # here was not replaced: it keeps the claim.)
                bus.release(name)
            return False
        begun()
        self._let_go(conn)  # a replay waits for the client to read: not in a slot
        upto, replaying = plan
        conn.inbox_range = (upto, upto)  # none from the inbox yet; the login's cut
        if not replaying:
            return True
        if conn.early:
            # On the admission thread: the replay waits for its client to read, so the
            # connection's own thread runs it, first thing (Listeners.serve).
            conn.later = lambda: self._replay.replay(conn, name, cmd, upto)
            return True
        return self._replay.replay(conn, name, cmd, upto)

    def _begin_logged(
        self, conn: Conn, name: str, new_user: bool, cmd: LoginCommand
    ) -> tuple[Callable[[], None] | None, tuple[int, bool]]:
        """Under the fan-out lock: begin the session and, if it gets a replay, hold its
        live traffic back until the replay is written. What to do once the lock is let
        go (``Presence.begin``'s; None: its client is gone, no session began), the
        login's cut (login_ok's seq) and whether a replay follows."""
        mlog = self._b.log
        assert mlog is not None
        # The last moment before a session here is replaced: the wait for the lock may
        # have been long enough for the client to give up (docs/RELIABILITY.md F4).
        if _abandoned(conn):
            return None, (0, False)
        upto = mlog.last_seq
        replaying = cmd.since is not None or mlog.has_inbox(name)
        self._count_early(conn)
        # Held from right after login_ok: the replay (or replay_truncated) is the first
        # thing after it, before even the users push (docs/PROTOCOL.md §Resume).
        begun = self._presence.begin(conn, name, new_user, cmd.id, upto, mlog.epoch, hold=replaying)
        return begun, (upto, replaying)


def _guest_holds(name: str) -> str:
    return f"{name} is an IRC guest's nick right now; try again once they leave"


def _abandoned(conn: Conn) -> bool:
    """Whether the client of a login whose session is about to begin has given up on
    it. It may be logged in on another connection, or node, already (a stalled
    server, docs/RELIABILITY.md F4 and F7): taking that session over would leave the
    user with none (docs/PROTOCOL.md §login). Checked right before each step that
    would end another session: the cluster's claim, and the roster's own takeover."""
    if not _hung_up(conn.sock):
        return False
    log.info("%r: its client closed the connection during its login: no session", conn)
    return True


def _hung_up(sock: socket.socket) -> bool:
    """Whether the peer has closed the connection (its end of stream, or a reset, is
    here), whatever bytes it sent before that are still unread; or it is closed."""
    if sock.fileno() < 0:
        return True
    poller = select.poll()
    poller.register(sock, select.POLLRDHUP)
    return any(
        ev & (select.POLLRDHUP | select.POLLHUP | select.POLLERR) for _, ev in poller.poll(0)
    )
