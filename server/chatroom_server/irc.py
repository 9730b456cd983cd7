"""The IRC gateway (docs/IRC.md): IRC clients in the same room as JSON clients.

An IRC connection is an ordinary connection of the server (chatroom_server.server) with
two translators at its edges, so that everything between them is the JSON side's own
code: the account store, the fan-out, the message log, the user list, and every limit
(flood control, slow consumers, login and idle timeouts, connection caps).

- **In** (:class:`IrcSession`, the connection's reader thread): IRC lines are parsed
  (:func:`parse`) and either answered here (CAP, NICK, USER, PASS, AUTHENTICATE, PING,
  WHO, WHOIS, MODE, ...) or turned into the JSON command they mean (``login``, ``pm``,
  ``dm``, ``users``, ``history``, ``exit``) and handed to the server's command path as a
  frame. The request id of such a command says what it came from (``PRIVMSG bob``), so
  that an error coming back can be answered with the numeric that IRC expects.
- **Out** (:class:`IrcOutbox`): every frame the server sends this connection (a
  broadcast queued by the fan-out, a DM, a users_delta, an error, ``bye``) becomes IRC
  lines before it is queued: ``broadcast`` is ``PRIVMSG #lobby``, ``users_delta`` is JOIN
  and QUIT lines, ``login_ok`` is the welcome burst (001-005, MOTD, JOIN, NAMES). The
  fan-out hands the same bytes to every recipient, so the translation of the last
  frames seen is cached (:class:`Translations`): N IRC recipients cost one translation
  per capability set, not N.

Lines are at most 512 bytes (plus IRCv3 tags); longer messages from JSON users are split
on word boundaries where possible and never inside a UTF-8 character. Input that is not
UTF-8 is read as Latin-1.

Threads: an :class:`IrcSession` belongs to its connection's reader thread. An
:class:`IrcOutbox` is called from any thread (as every Outbox is); what it reads of the
session (nick, capabilities) is set before the frames that depend on it can arrive, and
each is one attribute assignment. Translation runs wherever a frame is sent, and some
are sent under the server's locks (``login_ok`` under ``ChatServer._lock``, deltas under
the publisher's): it must never take a lock or call back into the server.
:class:`Translations` is shared: one dict of tuples, each replaced whole.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from chatroom.protocol import (
    Ack,
    Broadcast,
    Bye,
    ClientCommand,
    DirectMessage,
    DmCommand,
    ErrorEvent,
    ExitCommand,
    Feature,
    History,
    HistoryCommand,
    LoginCommand,
    LoginOk,
    PmCommand,
    ReplayTruncated,
    UserList,
    UsersCommand,
    UsersDelta,
    decode_event,
    is_valid_username,
    username_key,
)
from chatroom_server.outbox import Outbox

if TYPE_CHECKING:
    from chatroom_server.server import ChatServer, _Conn

log = logging.getLogger(__name__)

HOST: Final = "chatroom"  # every user's host part: user@host is name@chatroom
LINE: Final = 512  # bytes per line, CRLF included, tags excluded (RFC 1459)
MAX_SEQ: Final = 2**63 - 1  # the largest msgid (seq) the message log can hold
TAGS: Final = 8191  # bytes of IRCv3 tags a client may send on top (message-tags)
# multi-prefix changes nothing here (nobody has a channel prefix), so it is free to offer;
# userhost-in-names lists nick!user@host in NAMES.
CAPS: Final = (
    "message-tags",
    "sasl",
    "server-time",
    "draft/chathistory",
    "batch",
    "multi-prefix",
    "userhost-in-names",
)
MOTD: Final = (
    "Welcome to the chatroom IRC gateway.",
    "This channel is the room: JSON and IRC users together.",
    "Your nick is your account name; PRIVMSG a nick for a direct message.",
)
_BYE_TEXT: Final = {
    "exit": "Quit",
    "server_shutdown": "Server shutting down",
    "session_replaced": "Logged in from another connection",
    "timeout": "Ping timeout",
    "flood": "Excess flood",
}


# ------------------------------------------------------------------------------ parsing


@dataclass(slots=True)
class Message:
    """One IRC line: ``@tags :source COMMAND params...``."""

    command: str
    params: list[str] = field(default_factory=list)
    tags: str = ""
    source: str = ""


def decode_line(raw: bytes) -> str:
    """A line's text: UTF-8, or Latin-1 for clients that send something else."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def parse(line: str) -> Message | None:
    """A line into its parts (Modern IRC, "Message format"); None for an empty one.
    CR, LF and NUL may be in no part of a message (RFC 1459, 2.3.1): they are dropped
    here, from every field, because the gateway relays fields (USER's real name in WHO
    and WHOIS, a PING token in PONG, a command in 421) and a CR inside a line ends the
    line for many clients: what follows would be a line the client made up."""
    tags = source = ""
    rest = line.translate(_NOT_IN_A_LINE).lstrip(" ")
    if rest.startswith("@"):
        tags, _, rest = rest[1:].partition(" ")
        rest = rest.lstrip(" ")
    if rest.startswith(":"):
        source, _, rest = rest[1:].partition(" ")
        rest = rest.lstrip(" ")
    params: list[str] = []
    while rest:
        if rest.startswith(":"):
            params.append(rest[1:])
            break
        word, _, rest = rest.partition(" ")
        params.append(word)
        rest = rest.lstrip(" ")
    if not params:
        return None
    return Message(params[0].upper(), params[1:], tags, source)


_NOT_IN_A_LINE: Final = {ord("\r"): None, ord("\n"): None, ord("\0"): None}


class LineDecoder:
    """Bytes in, lines out (CRLF or bare LF). A line over the limit is reported as
    ``None`` (the caller answers 417) and skipped up to its end."""

    def __init__(self, limit: int = LINE + TAGS) -> None:
        self._buf = bytearray()
        self._limit = limit
        self._skipping = False

    def feed(self, data: bytes) -> list[bytes | None]:
        self._buf += data
        out: list[bytes | None] = []
        while True:
            i = self._buf.find(b"\n")
            if i < 0:
                if len(self._buf) > self._limit:
                    if not self._skipping:
                        out.append(None)
                    self._skipping = True
                    self._buf.clear()
                return out
            line = bytes(self._buf[:i]).rstrip(b"\r")
            del self._buf[: i + 1]
            if self._skipping:
                self._skipping = False
                continue
            out.append(None if len(line) > self._limit else line)


def split_text(text: str, budget: int) -> Iterator[str]:
    """``text`` as lines of at most ``budget`` UTF-8 bytes: split at newlines, then at
    the last space that keeps at least half the budget, never inside a character."""
    for para in text.replace("\r", "").replace("\0", "").split("\n"):
        data = para.encode()
        while len(data) > budget:
            cut = budget
            while cut > 0 and data[cut] & 0xC0 == 0x80:  # a continuation byte
                cut -= 1
            space = data.rfind(b" ", 0, cut + 1)
            if space >= budget // 2:
                yield data[:space].decode()
                data = data[space + 1 :]
            else:
                yield data[:cut].decode()
                data = data[cut:]
        if data:
            yield data.decode()


def _number(text: str) -> int | None:
    """A whole number written in ASCII digits, None for anything else. ``str.isdigit``
    also takes digits such as ``²`` that ``int()`` refuses; a number of over 19 digits is
    read as 10**19, past any seq (``int()`` refuses over 4,300 digits, and a line has
    room for more)."""
    if not text or not text.isascii() or not text.isdigit():
        return None
    return int(text) if len(text) <= 19 else 10**19


def iso_time(ts: float) -> str:
    """IRCv3 server-time: UTC, milliseconds, Z."""
    t = datetime.fromtimestamp(ts, UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def mask(name: str) -> str:
    return f"{name}!{name}@{HOST}"


# ------------------------------------------------------------------------------ out


class Translations:
    """The last frames translated for each set of capabilities that changes the
    output (tags or not), shared by every IRC connection: the fan-out queues the same
    bytes object to each recipient, so one translation serves all of them."""

    def __init__(self) -> None:
        self._last: dict[int, tuple[bytes, bytes]] = {}

    def get(self, data: bytes, mode: int) -> bytes | None:
        hit = self._last.get(mode)
        return hit[1] if hit is not None and hit[0] is data else None

    def put(self, data: bytes, mode: int, out: bytes) -> None:
        self._last[mode] = (data, out)


class IrcOutbox(Outbox):
    """An :class:`~chatroom_server.outbox.Outbox` that turns the server's frames into
    IRC lines for its connection (module docstring, "Out")."""

    __slots__ = ("session",)

    session: IrcSession

    def send(self, data: bytes) -> bool:
        return super().send(self.session.translate(data))

    def queue(self, data: bytes) -> bool:
        return super().queue(self.session.translate(data))

    def offer(self, data: bytes) -> None:
        super().offer(self.session.translate(data))

    def replay(self, data: bytes) -> bool:
        return super().replay(self.session.translate(data))

    def release(self, first: bytes) -> bool:
        return super().release(self.session.translate(first))

    def finish(self, last: bytes = b"") -> None:
        super().finish(self.session.translate(last) if last else b"")

    def send_irc(self, data: bytes) -> bool:
        """Lines made here, sent as they are."""
        return super().send(data)


# ------------------------------------------------------------------------------ session


class IrcSession:
    """One IRC client: registration, its commands, and the translation of what the
    server sends it (module docstring)."""

    def __init__(self, server: ChatServer, conn: _Conn, channel: str, shared: Translations) -> None:
        self.server = server
        self.conn = conn
        self.channel = channel
        self.name = server.config.irc_server_name  # ours, in prefixes, 004 and PONG
        self.decoder = LineDecoder()
        self._shared = shared
        self.nick = "*"  # what numerics are addressed to: the account name once in
        self.user: str | None = None  # USER's username and real name: WHO and WHOIS
        self.realname = ""
        self.password: str | None = None  # from PASS or SASL
        self.account: str | None = None  # SASL: the account the password was checked for
        self.caps: set[str] = set()
        self.cap_negotiating = False
        self.registered = False  # the welcome burst was sent
        self.sasl_mech: str | None = None
        self.sasl_buf = ""
        self.pinged = False  # the server sent PING for an idle client and awaits PONG
        # --irc-guests: the username key this guest holds (None: an account's session);
        # set by the server, on this connection's reader thread (ChatServer._guests).
        self.guest: str | None = None

    # -------------------------------------------------------------- sending

    def reply(self, *lines: str) -> None:
        """Lines made here (numerics, PONG, ...), each ended with CRLF."""
        data = "".join(line + "\r\n" for line in lines).encode()
        outbox = self.conn.outbox
        assert isinstance(outbox, IrcOutbox)
        outbox.send_irc(data)

    def numeric(self, code: str, *params: str, text: str | None = None) -> str:
        tail = f" :{text}" if text is not None else ""
        return f":{self.name} {code} {self.nick}{''.join(' ' + p for p in params)}{tail}"

    def num(self, code: str, *params: str, text: str | None = None) -> None:
        self.reply(self.numeric(code, *params, text=text))

    # -------------------------------------------------------------- in

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
        (ChatServer._irc_lines); the gateway builds commands within the bounds decoding
        would check (history limit 1-100, seqs >= 0, no cid)."""
        return self.server._run(self.conn, command, allowed=True)

    def _need(self, params: Sequence[str], n: int, cmd: str) -> bool:
        if len(params) < n or (n and not params[n - 1]):
            self.num("461", cmd, text="Not enough parameters")
            return False
        return True

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
        if self._need(params, 1, "PASS"):
            # PASS has one parameter; more can only be a password with spaces sent
            # without its colon (jaraco/irc does this): take them as one.
            self.password = " ".join(params)
        return True

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
        if self._need(params, 4, "USER"):
            self.user, self.realname = params[0], params[3]
            return self._try_register()
        return True

    def on_authenticate(self, params: list[str]) -> bool:
        if not self._need(params, 1, "AUTHENTICATE"):
            return True
        arg = params[0]
        if arg == "*":
            self.sasl_mech, self.sasl_buf = None, ""
            self.num("906", text="SASL authentication aborted")
            return True
        if self.account is not None:
            self.num("907", text="You have already authenticated using SASL")
            return True
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
        ok = self.server._irc_check_password(self.conn, name, secret)
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
        name = self.account or self.nick
        if self.server.config.irc_guests and self.account is None:
            # --irc-guests: a nick no account has is a guest, whatever PASS said; a
            # registered one logs in as usual.
            guest = self.server._irc_guest_login(self.conn, name)
            if guest is not None:
                return guest
        if self.password is None:
            self.num("464", text="Password required: PASS <password> or SASL PLAIN")
            self.reply(f"ERROR :Closing link: {HOST} (password required)")
            return False
        # login_ok comes back as the welcome burst (translate); errors as 464 or 432,
        # and then the connection closes: IRC has no second try after registering.
        keep = self.frame(
            LoginCommand(
                username=name,
                password=self.password,
                features=(Feature.USERS_DELTA.value,),
                id="login",
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
        if target.startswith("#"):
            if username_key(target) != username_key(self.channel):
                if not notice:
                    self.num("403", target, text="No such channel")
                return True
            return self.frame(PmCommand(message=text, id=f"{cmd} {target}"))
        return self.frame(DmCommand(to=target, message=text, id=f"{cmd} {target}"))

    def on_notice(self, params: list[str]) -> bool:
        return self.on_privmsg(params, notice=True)

    def on_join(self, params: list[str]) -> bool:
        if not self._need(params, 1, "JOIN"):
            return True
        for chan in params[0].split(","):
            if username_key(chan) == username_key(self.channel):
                self.reply(f":{mask(self.nick)} JOIN {self.channel}")
                self._names()
            elif chan != "0":
                self.num("403", chan, text="No such channel: this server has one room")
        return True

    def on_part(self, params: list[str]) -> bool:
        if not self._need(params, 1, "PART"):
            return True
        self.reply(
            f":{self.name} NOTICE {self.nick} :{self.channel} is the room itself; QUIT to leave it"
        )
        return True

    def on_names(self, params: list[str]) -> bool:
        if params and username_key(params[0]) != username_key(self.channel):
            self.num("366", params[0], text="End of /NAMES list")
            return True
        self._names()
        return True

    def _names(self) -> None:
        self.frame(UsersCommand(id="NAMES"))  # the list the deltas apply to

    def names_lines(self, users: Iterable[str]) -> list[str]:
        head = self.numeric("353", "=", self.channel, text="")
        budget = LINE - 2 - len(head.encode())
        lines, cur = [], ""
        full = "userhost-in-names" in self.caps
        for nick in users:
            # The prefix every message from them carries. Not irc_ident(): this runs
            # in translate(), under the server's lock (login_ok is sent under it).
            name = mask(nick) if full else nick
            if cur and len(cur) + 1 + len(name) > budget:
                lines.append(head + cur)
                cur = ""
            cur = f"{cur} {name}" if cur else name
        if cur:
            lines.append(head + cur)
        lines.append(self.numeric("366", self.channel, text="End of /NAMES list"))
        return lines

    def on_who(self, params: list[str]) -> bool:
        target = params[0] if params else "*"
        names = self.server.names()
        if username_key(target) == username_key(self.channel):
            shown = list(names)
        else:
            shown = [n for n in names if username_key(n) == username_key(target)]
        lines = []
        for n in shown:
            user, real = self.server.irc_ident(n)
            lines.append(
                self.numeric("352", self.channel, user, HOST, self.name, n, "H", text=f"0 {real}")
            )
        self.reply(*lines, self.numeric("315", target, text="End of WHO list"))
        return True

    def on_whois(self, params: list[str]) -> bool:
        if not self._need(params, 1, "WHOIS"):
            return True
        target = params[-1]
        online = {username_key(n): n for n in self.server.names()}
        name = online.get(username_key(target))
        if name is None:
            self.num("401", target, text="No such nick/channel")
        else:
            user, real = self.server.irc_ident(name)
            self.reply(
                self.numeric("311", name, user, HOST, "*", text=real),
                self.numeric("319", name, text=self.channel),
                self.numeric("312", name, self.name, text="chatroom"),
            )
        self.num("318", target, text="End of /WHOIS list")
        return True

    def on_mode(self, params: list[str]) -> bool:
        if not self._need(params, 1, "MODE"):
            return True
        target = params[0]
        if username_key(target) == username_key(self.channel):
            if len(params) > 1 and params[1].lstrip("+") == "b":
                self.num("368", self.channel, text="End of channel ban list")
            else:
                self.num("324", self.channel, "+nt")
        elif username_key(target) == username_key(self.nick):
            self.num("221", "+")
        elif target.startswith("#"):
            self.num("403", target, text="No such channel")
        else:
            self.num("502", text="Cannot change mode for other users")
        return True

    def on_topic(self, params: list[str]) -> bool:
        if self._need(params, 1, "TOPIC"):
            self.num("331", self.channel, text="No topic is set")
        return True

    def on_list(self, params: list[str]) -> bool:
        self.reply(
            self.numeric("321", "Channel", text="Users  Name"),
            self.numeric("322", self.channel, str(len(self.server.names())), text=""),
            self.numeric("323", text="End of /LIST"),
        )
        return True

    def on_motd(self, params: list[str]) -> bool:
        self.reply(*self.motd())
        return True

    def motd(self) -> list[str]:
        return [
            self.numeric("375", text=f"- {self.name} Message of the day -"),
            *(self.numeric("372", text=f"- {line}") for line in MOTD),
            self.numeric("376", text="End of /MOTD command."),
        ]

    def on_nick_change(self, params: list[str]) -> bool:
        if params and username_key(params[0]) == username_key(self.nick):
            return True
        self.num(
            "447",
            text="Nick changes are not allowed here: your nick is your account name",
        )
        return True

    def on_reregister(self, params: list[str]) -> bool:
        self.num("462", text="You may not reregister")
        return True

    def on_chathistory(self, params: list[str]) -> bool:
        """draft/chathistory: LATEST, BEFORE and AFTER, by msgid (our seq)."""
        if not self._need(params, 3, "CHATHISTORY"):
            return True
        sub, target = params[0].upper(), params[1]
        limit = _number(params[-1])
        if limit is None or sub not in ("LATEST", "BEFORE", "AFTER"):
            self.reply(f"FAIL CHATHISTORY INVALID_PARAMS {sub} :Unsupported or invalid request")
            return True
        ref = params[2]
        before = after = None
        if ref != "*":
            if not ref.startswith("msgid="):
                self.reply(f"FAIL CHATHISTORY INVALID_PARAMS {ref} :Only msgid= is supported")
                return True
            msgid = _number(ref[6:])
            if msgid is None or msgid > MAX_SEQ:
                why = f"A msgid is a number from 0 to {MAX_SEQ}"
                self.reply(f"FAIL CHATHISTORY INVALID_PARAMS {ref} :{why}")
                return True
            if sub == "AFTER":
                after = msgid
            else:
                before = msgid
        with_user = None if target.startswith("#") else target
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
                id=f"CHATHISTORY {target}",
            )
        )

    # anytime -----------------------------------------------------------

    def on_ping(self, params: list[str]) -> bool:
        if self._need(params, 1, "PING"):
            self.reply(f":{self.name} PONG {self.name} :{params[0]}")
        return True

    def on_pong(self, params: list[str]) -> bool:
        self.pinged = False
        return True

    def on_quit(self, params: list[str]) -> bool:
        if not self.registered:
            self.reply(f"ERROR :Closing link: {HOST} (Quit)")
            return False
        return self.frame(ExitCommand(id="QUIT"))

    # -------------------------------------------------------------- out

    def translate(self, data: bytes) -> bytes:
        """The server's frames (JSON lines) as IRC lines for this client."""
        # The capabilities that change the lines: tags with time, and with msgid.
        mode = ("server-time" in self.caps) | ("message-tags" in self.caps) << 1
        if self.registered:
            hit = self._shared.get(data, mode)
            if hit is not None:
                return hit
        out: list[str] = []
        shareable = True
        for line in data.splitlines():
            if not line:
                continue
            try:
                event = decode_event(line)
            except Exception:
                log.exception("cannot translate %r for IRC", line[:200])
                continue
            shareable = self._event(event, out) and shareable
        result = "".join(x + "\r\n" for x in out).encode()
        if shareable and self.registered:
            self._shared.put(data, mode, result)
        return result

    def _tags(self, ts: float | None, seq: int | None, batch: str | None = None) -> str:
        parts = []
        if batch is not None:
            parts.append(f"batch={batch}")
        if ts is not None and self.caps & {"server-time", "message-tags"}:
            parts.append(f"time={iso_time(ts)}")
        if seq is not None and "message-tags" in self.caps:
            parts.append(f"msgid={seq}")
        return "@" + ";".join(parts) + " " if parts else ""

    def _privmsg(
        self,
        out: list[str],
        sender: str,
        target: str,
        text: str,
        ts: float | None,
        seq: int | None,
        batch: str | None = None,
    ) -> None:
        head = f":{mask(sender)} PRIVMSG {target} :"
        tags = self._tags(ts, seq, batch)
        for part in split_text(text, LINE - 2 - len(head.encode())):
            out.append(tags + head + part)

    def _event(self, e: object, out: list[str]) -> bool:
        """Append the lines for one event; False if they are for this client only."""
        handler = _EVENTS.get(type(e))
        if handler is None:
            return True  # pong, replay_done, password_required: nothing to say in IRC
        return handler(self, e, out)

    def _on_broadcast(self, e: Broadcast, out: list[str]) -> bool:
        self._privmsg(out, e.sender, self.channel, e.message, e.ts, e.seq)
        return True

    def _on_dm(self, e: DirectMessage, out: list[str]) -> bool:
        self._privmsg(out, e.sender, e.to, e.message, e.ts, e.seq)
        return True

    def _on_users_delta(self, e: UsersDelta, out: list[str]) -> bool:
        me = username_key(self.nick)
        out += [f":{mask(n)} JOIN {self.channel}" for n in e.joined if username_key(n) != me]
        out += [f":{mask(n)} QUIT :Left the room" for n in e.left if username_key(n) != me]
        return False  # "not me" differs per client

    def _on_login_ok(self, e: LoginOk, out: list[str]) -> bool:
        self._welcome(e, out)
        return False

    def _on_user_list(self, e: UserList, out: list[str]) -> bool:
        if e.id == "NAMES":
            # The list users_delta builds on (roster.UsersPublisher.reply) has this
            # user only once the delta with its login is published, and a delta about
            # oneself is never shown (_on_users_delta): a client in the channel is in
            # its NAMES whatever the timing.
            me = username_key(self.nick)
            users = e.users
            if self.registered and not any(username_key(u) == me for u in users):
                users = tuple(sorted((*users, self.nick), key=username_key))
            out += self.names_lines(users)
        return False

    def _on_ack(self, e: Ack, out: list[str]) -> bool:
        if e.queued and e.to:
            out.append(
                f":{self.name} NOTICE {self.nick} :{e.to} is offline; they get your "
                "message when they log in"
            )
        return False

    def _on_error(self, e: ErrorEvent, out: list[str]) -> bool:
        self._error(e, out)
        return False

    def _on_bye(self, e: Bye, out: list[str]) -> bool:
        out.append(f"ERROR :Closing link: {HOST} ({_BYE_TEXT.get(e.reason, e.reason)})")
        return True

    def _on_history(self, e: History, out: list[str]) -> bool:
        self._history(e, out)
        return False

    def _on_replay_truncated(self, e: ReplayTruncated, out: list[str]) -> bool:
        out.append(f":{self.name} NOTICE {self.nick} :Older messages were not kept")
        return False

    def _welcome(self, e: LoginOk, out: list[str]) -> None:
        old, self.nick = self.nick, e.username
        if old not in ("*", e.username):
            out.append(f":{old}!{old}@{HOST} NICK :{e.username}")
        limits = self.server.config.limits
        out += [
            self.numeric("001", text=f"Welcome to the chatroom IRC gateway, {mask(e.username)}"),
            self.numeric("002", text=f"Your host is {self.name}, running chatroom"),
            self.numeric("003", text="This server was created " + _STARTED),
            self.numeric("004", self.name, "chatroom", "i", "nt"),
            self.numeric(
                "005",
                "NETWORK=chatroom",
                "CASEMAPPING=ascii",
                "CHANTYPES=#",
                "CHANLIMIT=#:1",
                f"NICKLEN={32}",
                f"LINELEN={LINE}",
                "PREFIX=(ov)@+",  # the default; nobody here is an op or voiced
                "CHANMODES=,,,nt",
                "TARGMAX=PRIVMSG:1,NOTICE:1",
                "CHATHISTORY=100",
                "MSGREFTYPES=msgid",
                f"MAXMSG={limits.max_message}",
                text="are supported by this server",
            ),
            *self.motd(),
            f":{mask(e.username)} JOIN {self.channel}",
            *self.names_lines(e.users),
        ]
        self.registered = True

    def _error(self, e: ErrorEvent, out: list[str]) -> None:
        rid = e.id if isinstance(e.id, str) else ""
        cmd, _, target = rid.partition(" ")
        if cmd == "NOTICE":
            return  # RFC 1459: never an automatic reply to a NOTICE
        if cmd == "login":
            if e.code == "invalid_username":
                out.append(self.numeric("432", self.nick, text=e.message))
            elif e.code in ("rate_limited", "unavailable"):
                out.append(f":{self.name} NOTICE {self.nick} :{e.message}")
                out.append(f"ERROR :Closing link: {HOST} ({e.message})")
            else:
                out.append(self.numeric("464", text=f"Password incorrect: {e.message}"))
                out.append(f"ERROR :Closing link: {HOST} (Bad password)")
            return
        if cmd == "sasl":  # a password check refused, and why (wrong, throttled, busy)
            out.append(self.numeric("904", text=f"SASL authentication failed: {e.message}"))
            return
        if cmd == "PRIVMSG" and e.code in ("unknown_user", "user_offline"):
            out.append(self.numeric("401", target, text=e.message))
            return
        if e.code == "not_logged_in":
            out.append(self.numeric("451", text="You have not registered"))
            return
        if e.code == "unknown_command" and cmd:
            out.append(self.numeric("421", cmd, text=e.message))
            return
        if cmd == "CHATHISTORY":
            out.append(f"FAIL CHATHISTORY MESSAGE_ERROR {target} :{e.message}")
            return
        if e.code == "server_full":
            out.append(f"ERROR :Closing link: {HOST} ({e.message})")
            return
        out.append(f":{self.name} NOTICE {self.nick} :{e.message}")

    def _history(self, e: History, out: list[str]) -> None:
        rid = e.id if isinstance(e.id, str) else ""
        target = rid.partition(" ")[2] or self.channel
        batch = None
        if "batch" in self.caps:
            batch = f"h{time.monotonic_ns() % 10**9}"
            out.append(f"BATCH +{batch} chathistory {target}")
        for m in e.messages:
            dest = self.channel if m.kind == "pm" else (m.to or target)
            self._privmsg(out, m.sender, dest, m.message, m.ts, m.seq, batch)
        if batch is not None:
            out.append(f"BATCH -{batch}")


_STARTED = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

# The server's events and the lines they become (IrcSession._event).
_EVENTS: dict[type, Callable[[IrcSession, Any, list[str]], bool]] = {
    Broadcast: IrcSession._on_broadcast,
    DirectMessage: IrcSession._on_dm,
    UsersDelta: IrcSession._on_users_delta,
    LoginOk: IrcSession._on_login_ok,
    UserList: IrcSession._on_user_list,
    Ack: IrcSession._on_ack,
    ErrorEvent: IrcSession._on_error,
    Bye: IrcSession._on_bye,
    History: IrcSession._on_history,
    ReplayTruncated: IrcSession._on_replay_truncated,
}

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
}
