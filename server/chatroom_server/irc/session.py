"""In: one IRC client's lines, read on its connection's reader thread (chatroom_server.irc,
"In"): registration (CAP, NICK, USER, PASS, SASL), the commands answered here (PING,
WHO, WHOIS, MODE, ...), and those that become the server's commands (``login``, ``pm``,
``dm``, ``users``, ``history``, ``exit``), run through the same path as a JSON client's.

It reaches the server only through :class:`Core`, the public face the server shows a
transport, never through the server's private names.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections.abc import Callable
from typing import cast

from chatroom.protocol import (
    ClientCommand,
    DmCommand,
    ExitCommand,
    Feature,
    HistoryCommand,
    LoginCommand,
    PmCommand,
    is_valid_username,
    username_key,
)
from chatroom_server.irc.asked import Pending
from chatroom_server.irc.channels import ChannelCommands
from chatroom_server.irc.core import Connection, Core, Lines
from chatroom_server.irc.operators import OperatorCommands
from chatroom_server.irc.parse import (
    CAPS,
    HOST,
    LINE,
    MAX_SEQ,
    LineDecoder,
    Message,
    decode_line,
    mask,
    number,
    parse,
    too_long,
)
from chatroom_server.irc.queries import Gone, ServerQueries
from chatroom_server.irc.translations import Translations

log = logging.getLogger("chatroom_server.irc")


class IrcSession(ChannelCommands, ServerQueries, OperatorCommands):
    """One IRC client: registration, its commands, and the translation of what the
    server sends it (module docstring)."""

    def __init__(self, server: Core, conn: Connection, channel: str, shared: Translations) -> None:
        self.server = server
        self.runner = server.runner  # the command path, called directly (core.Runner)
        self.conn = conn
        self.channel = channel
        self.name = server.config.irc_server_name  # ours, in prefixes, 004 and PONG
        self.max_message = server.config.limits.max_message  # 005's MAXMSG
        self.decoder = LineDecoder()
        self._shared = shared
        self.pending = Pending()  # what it asked the server, by request id (irc.asked)
        self.nick = "*"  # what numerics are addressed to: the account name once in
        self.user: str | None = None  # USER's username and real name: WHO and WHOIS
        self.realname = ""
        self.password: str | None = None  # from PASS or SASL
        # --irc-password (docs/IRC.md "Server password"): PASS's text, which is then the
        # server's password and not an account's; checked once (None: not yet).
        self.server_pass: str | None = None
        self.server_pass_ok: bool | None = None
        self.account: str | None = None  # SASL: the account the password was checked for
        self.caps: set[str] = set()
        self.cap_negotiating = False
        self.registered = False  # the welcome burst was sent
        self.sasl_mech: str | None = None
        self.sasl_buf = ""
        self.pinged = False  # the server sent PING for an idle client and awaits PONG
        # --irc-guests: the username key this guest holds (None: an account's session);
        # set by the server, on this connection's reader thread (Presence.guests).
        self.guest: str | None = None
        self.away: str | None = None  # AWAY's text (docs/IRC.md); read by other sessions
        self.invisible = False  # user mode +i: WHO masks leave it out (queries.py)
        self.wallops = False  # user mode +w: it gets WALLOPS (operators.py); read by others
        self.oper_failures = 0  # wrong O-line passwords (operators.py)
        self.quit_reason: str | None = None  # QUIT's, for the guest rooms' quit events
        self._whowas = shared.whowas
        self._gone = False  # remembered for WHOWAS already

    # -------------------------------------------------------------- in

    def receive_data(self, data: bytes) -> bool:
        """The IRC lines of one read; False closes the connection. Every line is metered
        as a JSON frame is, and the same pre-login limit holds."""
        conn = self.conn
        self.pinged = False  # it is alive: the next PING after another quiet spell
        for raw in self.decoder.feed(data):
            allowed = self.runner.meter(conn)
            if allowed is None:
                return False  # flooding: the bye (ERROR) is on its way
            if raw is None or too_long(raw):
                self.too_long()
                continue
            msg = parse(decode_line(raw))
            if msg is None:
                continue
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%r irc: %s", conn, "PASS ..." if msg.command == "PASS" else raw[:200])
            before_login = conn.rules.max_frames_before_login
            if conn.username is None and conn.frames > before_login:
                self.reply(f"ERROR :Closing link: register within {before_login} commands")
                return False
            if not allowed:
                if msg.command != "NOTICE":
                    self.reply(f":{self.name} NOTICE {self.nick} :{conn.rules.rate_limited_text()}")
                continue
            if not self.handle(msg):
                return False
        return True

    def handle(self, msg: Message) -> bool:
        """One command from the client; False closes the connection."""
        cmd = msg.command
        handler = _BEFORE.get(cmd) if not self.registered else _AFTER.get(cmd)
        if handler is None:
            handler = _ANYTIME.get(cmd)
        if handler is None:
            if not self.registered and cmd in _AFTER:
                self.num("451", text="You have not registered")
            else:
                self.num("421", cmd, text="Unknown command")
            return True
        return handler(self, msg.params)

    def too_long(self) -> None:
        self.num("417", text="Input line was too long")

    def frame(self, command: ClientCommand) -> bool:
        """Hand a JSON command to the server's command path (limits, validation and
        all), as the struct: encoding it only for the server to decode it again would
        be work for nothing. Metered already, as every IRC line is
        (receive_data); the gateway builds commands within the bounds decoding
        would check (history limit 1-100, seqs >= 0, no cid)."""
        return self.runner.run_command(self.conn, command, allowed=True)

    def lobby_names(self) -> tuple[str, ...]:
        return self.server.names()

    # registration ------------------------------------------------------

    def on_cap(self, params: list[str]) -> bool:
        if not params:
            self.num("461", "CAP", text="Not enough parameters")
            return True
        sub = params[0].upper()
        if sub == "LS":
            if not self.registered:
                self.cap_negotiating = True
            v302 = len(params) > 1 and params[1].isdigit() and int(params[1]) >= 302
            offered = " ".join("sasl=PLAIN" if c == "sasl" and v302 else c for c in CAPS)
            self.reply(f":{self.name} CAP {self.nick} LS :{offered}")
        elif sub == "LIST":
            self.reply(f":{self.name} CAP {self.nick} LIST :{' '.join(sorted(self.caps))}")
        elif sub == "REQ":
            if not self.registered:
                self.cap_negotiating = True
            wanted = params[1].split() if len(params) > 1 else []
            names = [w.lstrip("-") for w in wanted]
            if all(n in CAPS for n in names) and wanted:
                for w in wanted:
                    if w.startswith("-"):
                        self.caps.discard(w[1:])
                    else:
                        self.caps.add(w)
                self.reply(f":{self.name} CAP {self.nick} ACK :{' '.join(wanted)}")
            else:
                self.reply(f":{self.name} CAP {self.nick} NAK :{' '.join(wanted)}")
        elif sub == "END":
            self.cap_negotiating = False
            return self._try_register()
        else:
            self.num("410", params[0], text="Invalid CAP command")
        return True

    def on_pass(self, params: list[str]) -> bool:
        if self.need(params, 1, "PASS"):
            # PASS has one parameter; more can only be a password with spaces sent
            # without its colon (jaraco/irc does this): take them as one.
            if self.server.config.irc_password is not None:
                self.server_pass, self.server_pass_ok = " ".join(params), None
            else:
                self.password = " ".join(params)
        return True

    def server_password(self) -> bool:
        """--irc-password: whether PASS gave it (checked once); False has sent 464 and
        ERROR, and the connection closes (Modern IRC: ERR_PASSWDMISMATCH, then ERROR).
        The password itself is never logged, nor echoed."""
        expected = self.server.config.irc_password
        if expected is None:
            return True
        if self.server_pass_ok is None:
            given = self.server_pass
            self.server_pass_ok = given is not None and expected.matches(given)
        if self.server_pass_ok:
            return True
        missing = self.server_pass is None
        log.info("%r: %s server password", self.conn, "no" if missing else "a wrong")
        self.num("464", text="Password incorrect" + (": PASS it first" if missing else ""))
        self.reply(f"ERROR :Closing link: {HOST} (bad server password)")
        return False

    def on_nick(self, params: list[str]) -> bool:
        if not params or not params[0]:
            self.num("431", text="No nickname given")
            return True
        nick = params[0]
        if not is_valid_username(nick):
            self.num("432", nick, text="Erroneous nickname: 1-32 of A-Z a-z 0-9 _ -")
            return True
        self.nick = nick
        return self._try_register()

    def on_user(self, params: list[str]) -> bool:
        if self.need(params, 4, "USER"):
            self.user, self.realname = params[0], params[3]
            return self._try_register()
        return True

    def on_authenticate(self, params: list[str]) -> bool:
        if not self.need(params, 1, "AUTHENTICATE"):
            return True
        arg = params[0]
        if arg == "*":
            self.sasl_mech, self.sasl_buf = None, ""
            self.num("906", text="SASL authentication aborted")
            return True
        if self.account is not None:
            self.num("907", text="You have already authenticated using SASL")
            return True
        if not self.server_password():
            return False  # no account's password is tried without the server's
        if self.sasl_mech is None:
            if arg.upper() != "PLAIN":
                self.num("908", "PLAIN", text="are available SASL mechanisms")
                self.num("904", text="SASL authentication failed")
                return True
            self.sasl_mech = "PLAIN"
            self.reply("AUTHENTICATE +")
            return True
        if arg != "+":
            self.sasl_buf += arg
            if len(self.sasl_buf) > 4 * 400:
                self.sasl_mech, self.sasl_buf = None, ""
                self.num("905", text="SASL message too long")
                return True
            if len(arg) == 400:
                return True  # more chunks follow
        payload, self.sasl_mech, self.sasl_buf = self.sasl_buf, None, ""
        try:
            _authz, authc, password = base64.b64decode(payload, validate=True).split(b"\0")
            name, secret = authc.decode(), decode_line(password)
        except (binascii.Error, ValueError, UnicodeDecodeError):
            self.num("904", text="SASL authentication failed")
            return True
        if not is_valid_username(name):
            self.num("904", text="SASL authentication failed: not a valid account name")
            return True
        ok = self.server.check_password(self.conn, name, secret)
        if ok is None:
            return False  # too many failures: the server closes the connection
        if ok:
            self.account, self.password = name, secret
            self.reply(
                self.numeric("900", mask(name), name, text=f"You are now logged in as {name}"),
                self.numeric("903", text="SASL authentication successful"),
            )
        # else: the server's error frame came back as 904 with its reason (_error)
        return True

    def _try_register(self) -> bool:
        if self.registered or self.cap_negotiating or self.nick == "*" or self.user is None:
            return True
        if not self.server_password():
            return False
        name = self.account or self.nick
        if self.server.config.irc_guests and self.account is None:
            # --irc-guests: a nick no account has is a guest, whatever PASS said; a
            # registered one logs in as usual.
            guest = self.server.guest_login(self.conn, name)
            if guest is not None:
                return guest
        if self.password is None:
            how = "SASL PLAIN" if self.server_pass is not None else "PASS <password> or SASL PLAIN"
            self.num("464", text=f"Password required: {how}")
            self.reply(f"ERROR :Closing link: {HOST} (password required)")
            return False
        # login_ok comes back as the welcome burst (translate); errors as 464 or 432,
        # and then the connection closes: IRC has no second try after registering.
        keep = self.frame(
            LoginCommand(
                username=name,
                password=self.password,
                # rooms: channels are rooms (chatroom_server.irc.channels)
                features=(Feature.USERS_DELTA.value, Feature.ROOMS.value),
                id=self.pending.ask("login"),
            )
        )
        return keep and self.conn.username is not None

    # after registration ------------------------------------------------

    def on_privmsg(self, params: list[str], notice: bool = False) -> bool:
        cmd = "NOTICE" if notice else "PRIVMSG"
        if not params or not params[0]:
            if not notice:
                self.num("411", text=f"No recipient given ({cmd})")
            return True
        if len(params) < 2 or not params[1]:
            if not notice:
                self.num("412", text="No text to send")
            return True
        target, text = params[0], params[1]
        head = f":{mask(self.nick)} {cmd} {target} :"
        if len(head.encode()) + len(text.encode()) + 2 > LINE:
            # Relayed with our prefix it would not fit in one line, and the gateway splits
            # only what JSON users say: refused whole, never cut (Modern IRC's 417).
            if not notice:
                self.too_long()
            return True
        if target.startswith("#"):
            room = self.room_of(target)
            if room is None and not self.in_lobby:
                if not notice:  # a guest that has not joined it (+n: no outside messages)
                    self.num("404", target, text="Cannot send to channel: join it first")
                return True
            if room is not None and not self.rooms:
                # A connection without rooms would take the pm for lobby's.
                if not notice:
                    self.num("403", target, text=f"No such channel: only {self.channel}")
                return True
            rid = self._send_id(cmd, target, text)
            return self.frame(PmCommand(message=text, room=room, notice=notice, id=rid))
        if not notice:
            self.away_reply(target)
        rid = self._send_id(cmd, target, text)
        return self.frame(DmCommand(to=target, message=text, notice=notice, id=rid))

    def _send_id(self, cmd: str, target: str, text: str) -> int:
        """The request id of a PRIVMSG or NOTICE: with echo-message, its text is kept
        too, which the ack, the server's word that it took the message, sends back
        (render.py)."""
        if "echo-message" in self.caps:
            return self.pending.ask(cmd, target, text)
        return self.pending.ask(cmd, target)

    def on_notice(self, params: list[str]) -> bool:
        return self.on_privmsg(params, notice=True)

    def on_whois(self, params: list[str]) -> bool:
        if not self.need(params, 1, "WHOIS"):
            return True
        target = params[-1]
        online = {username_key(n): n for n in self.server.names()}
        name = online.get(username_key(target))
        if name is None:
            self.num("401", target, text="No such nick/channel")
        else:
            user, real, away = self.ident(name)
            self.reply(
                self.numeric("311", name, user, HOST, "*", text=real),
                self.numeric("319", name, text=self.channels_of(name)),
                self.numeric("312", name, self.name, text="chatroom"),
            )
            if away is not None:
                self.num("301", name, text=away)
            if self.server.is_server_operator(name):
                self.num("313", name, text="is an IRC operator")
        self.num("318", target, text="End of /WHOIS list")
        return True

    def on_mode(self, params: list[str]) -> bool:
        if not self.need(params, 1, "MODE"):
            return True
        target = params[0]
        if target.startswith("#"):
            return self.on_channel_mode(target, params)
        if username_key(target) == username_key(self.nick):
            if len(params) < 2:
                modes = "i" * self.invisible + "w" * self.wallops + "o" * self.conn.oper
                self.num("221", "+" + modes)
            elif set(params[1]) <= set("+-iw") and params[1].strip("+-"):
                # +i (invisible): left out of WHO masks (queries.py); +w: WALLOPS.
                sign, said = "+", ""
                for c in params[1]:
                    if c in "+-":
                        sign = c
                        continue
                    setattr(self, "invisible" if c == "i" else "wallops", sign == "+")
                    said += sign + c
                self.reply(f":{self.prefix()} MODE {self.nick} :{said}")
            else:
                self.num("501", text="Unknown MODE flag: only i and w are known")
        else:
            self.num("502", text="Cannot change mode for other users")
        return True

    def on_motd(self, params: list[str]) -> bool:
        self.reply(*self.motd())
        return True

    def on_nick_change(self, params: list[str]) -> bool:
        if not params or not params[0]:
            self.num("431", text="No nickname given")
            return True
        new = params[0]
        if new == self.nick:
            return True  # no change: nothing to say, to anyone
        if self.guest is None:
            if username_key(new) != username_key(self.nick):
                why = "Nick changes are not allowed here: your nick is your account name"
                self.num("447", text=why)
            return True
        if not is_valid_username(new):
            self.num("432", new, text="Erroneous nickname: 1-32 of A-Z a-z 0-9 _ -")
            return True
        old = self.nick

        def done() -> None:
            # Under the fan-out lock, on this thread: the session is new's now, and this
            # client hears it first (everyone else: users_delta, room events).
            self.nick = new
            line = f":{mask(old)} NICK :{new}\r\n".encode()
            cast(Lines, self.conn.outbox).send_irc(line)

        got = self.server.rename_guest(self.conn, new, done)
        if got == "in_use":
            self.num("433", new, text="Nickname is already in use")
        elif got.startswith("banned:"):  # ERR_BANNICKCHANGE, as Ergo's: the nick is kept
            chan = self.chan(got.removeprefix("banned:"))
            self.num("435", new, chan, text="Cannot change nickname while banned on channel")
        elif got != "ok":
            self.num("447", text=f"Nick change refused: {got}")
        return True

    def on_reregister(self, params: list[str]) -> bool:
        self.num("462", text="You may not reregister")
        return True

    def on_chathistory(self, params: list[str]) -> bool:
        """draft/chathistory: LATEST, BEFORE and AFTER, by msgid (our seq)."""
        if not self.need(params, 3, "CHATHISTORY"):
            return True
        sub, target = params[0].upper(), params[1]
        limit = number(params[-1])
        if limit is None or sub not in ("LATEST", "BEFORE", "AFTER"):
            self.reply(f"FAIL CHATHISTORY INVALID_PARAMS {sub} :Unsupported or invalid request")
            return True
        ref = params[2]
        before = after = None
        if ref != "*":
            if not ref.startswith("msgid="):
                self.reply(f"FAIL CHATHISTORY INVALID_PARAMS {ref} :Only msgid= is supported")
                return True
            msgid = number(ref[6:])
            if msgid is None or msgid > MAX_SEQ:
                why = f"A msgid is a number from 0 to {MAX_SEQ}"
                self.reply(f"FAIL CHATHISTORY INVALID_PARAMS {ref} :{why}")
                return True
            if sub == "AFTER":
                after = msgid
            else:
                before = msgid
        with_user = None if target.startswith("#") else target
        room = self.room_of(target) if target.startswith("#") else None
        if room is not None and not self.rooms:
            self.reply(f"FAIL CHATHISTORY INVALID_TARGET {target} :Only {self.channel} here")
            return True
        if with_user is not None and self.guest is not None:
            # A guest's DMs are never stored (docs/IRC.md): any stored with its nick are
            # an earlier guest's, from a server before that rule, and not this one's.
            if "batch" in self.caps:
                batch = f"h{time.monotonic_ns() % 10**9}"
                self.reply(f"BATCH +{batch} chathistory {target}", f"BATCH -{batch}")
            return True
        return self.frame(
            HistoryCommand(
                before=before,
                after=after,
                limit=max(1, min(limit, 100)),
                with_user=with_user,
                room=room,
                id=self.pending.ask("CHATHISTORY", target),
            )
        )

    # anytime -----------------------------------------------------------

    def on_ping(self, params: list[str]) -> bool:
        if self.need(params, 1, "PING"):
            self.reply(f":{self.name} PONG {self.name} :{params[0]}")
        return True

    def on_pong(self, params: list[str]) -> bool:
        self.pinged = False
        return True

    def on_quit(self, params: list[str]) -> bool:
        if not self.registered:
            self.reply(f"ERROR :Closing link: {HOST} (Quit)")
            return False
        self.closed()  # in WHOWAS before anyone can ask for it
        self.quit_reason = params[0] if params and params[0] else None
        return self.frame(ExitCommand(id=self.pending.ask("QUIT")))

    def closed(self) -> None:
        """The session ends (QUIT, or the server's reader thread at the connection's
        end): remembered for WHOWAS, once."""
        if self.registered and not self._gone:
            self._gone = True
            self._whowas.add(Gone(self.nick, self.user or self.nick, self.realname, time.time()))


Handler = Callable[[IrcSession, list[str]], bool]
_ANYTIME: dict[str, Handler] = {
    "CAP": IrcSession.on_cap,
    "PING": IrcSession.on_ping,
    "PONG": IrcSession.on_pong,
    "QUIT": IrcSession.on_quit,
}
_BEFORE: dict[str, Handler] = {
    "PASS": IrcSession.on_pass,
    "NICK": IrcSession.on_nick,
    "USER": IrcSession.on_user,
    "AUTHENTICATE": IrcSession.on_authenticate,
}
_AFTER: dict[str, Handler] = {
    "PRIVMSG": IrcSession.on_privmsg,
    "NOTICE": IrcSession.on_notice,
    "JOIN": IrcSession.on_join,
    "PART": IrcSession.on_part,
    "NAMES": IrcSession.on_names,
    "WHO": IrcSession.on_who,
    "WHOIS": IrcSession.on_whois,
    "MODE": IrcSession.on_mode,
    "TOPIC": IrcSession.on_topic,
    "LIST": IrcSession.on_list,
    "MOTD": IrcSession.on_motd,
    "NICK": IrcSession.on_nick_change,
    "USER": IrcSession.on_reregister,
    "PASS": IrcSession.on_reregister,
    "AUTHENTICATE": IrcSession.on_reregister,
    "CHATHISTORY": IrcSession.on_chathistory,
    "OPER": IrcSession.on_oper,
    "KILL": IrcSession.on_kill,
    "WALLOPS": IrcSession.on_wallops,
    "INFO": IrcSession.on_info,
    "INVITE": IrcSession.on_invite,
    "KICK": IrcSession.on_kick,
    "AWAY": IrcSession.on_away,
    "USERHOST": IrcSession.on_userhost,
    "LUSERS": IrcSession.on_lusers,
    "TIME": IrcSession.on_time,
    "WHOWAS": IrcSession.on_whowas,
}
