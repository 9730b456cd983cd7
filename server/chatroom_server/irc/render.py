"""Out: the server's frames as IRC lines for one client (chatroom_server.irc, "Out").

:class:`IrcRender` is the half of an IRC session that turns what the server sends into
lines (the welcome burst, PRIVMSG, JOIN and QUIT, numerics for errors, history in a
batch); :class:`~chatroom_server.irc.session.IrcSession` extends it with the half that
reads the client's lines. It runs wherever a frame is sent, sometimes under the
server's locks: it never takes a lock or calls back into the server.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import msgspec

from chatroom.moderation import BanList
from chatroom.protocol import (
    Ack,
    Broadcast,
    Bye,
    DirectMessage,
    ErrorEvent,
    History,
    LoginOk,
    ReplayTruncated,
    UserList,
    UsersDelta,
    decode_event,
    username_key,
)
from chatroom.rooms import (
    LOBBY,
    RoomEvent,
    RoomInfo,
    RoomInfoReply,
    RoomList,
    room_key,
)
from chatroom_server.frames import Frames
from chatroom_server.irc.answers import error_lines
from chatroom_server.irc.asked import NOTHING, Asked, Pending
from chatroom_server.irc.parse import (
    BYE_TEXT,
    HOST,
    LINE,
    MOTD,
    iso_time,
    mask,
    role_prefix,
    split_text,
)
from chatroom_server.irc.replies import Numerics

if TYPE_CHECKING:
    from chatroom_server.irc.translations import Translations

log = logging.getLogger("chatroom_server.irc")


class IrcRender(Numerics):
    """The lines one IRC client gets for the server's frames (module docstring). What
    it reads of the session (nick, capabilities, registered) is set by the session's
    reader thread before the frames that depend on it can arrive."""

    # Set by IrcSession.__init__ (and its registration), as name and nick (Numerics).
    channel: str
    caps: set[str]
    registered: bool
    # login_ok said protocol v2 (rooms): a server without history has none
    rooms: bool = False
    guest: str | None  # --irc-guests: the nick's key (set before login_ok)
    # The client shows the lobby channel: its JOIN and QUIT lines and its messages. An
    # account's from the welcome on; a guest's once it JOINs it (docs/IRC.md).
    in_lobby: bool = True
    _last_quit: tuple[str, float] | None = None  # one QUIT line for a guest-room quit
    max_message: int
    _shared: Translations
    # What this session asked the server, by request id (asked.py): its reader thread
    # adds, the answer's rendering takes.
    pending: Pending

    def prefix(self) -> str:
        return mask(self.nick)

    def chan(self, room: str | None) -> str:
        """The channel of a room: ``#name``, and the gateway's own for lobby."""
        return self.channel if room is None or room_key(room) == LOBBY else "#" + room

    def names_lines(
        self,
        users: Iterable[str],
        channel: str | None = None,
        roles: dict[str, str] | None = None,
        secret: bool = False,
        voiced: Iterable[str] = (),
    ) -> list[str]:
        channel = channel or self.channel
        head = self.numeric("353", "@" if secret else "=", channel, text="")
        budget = LINE - 2 - len(head.encode())
        lines, cur = [], ""
        full = "userhost-in-names" in self.caps
        roles = roles or {}
        multi = "multi-prefix" in self.caps
        also = frozenset(voiced) if multi else frozenset()
        for nick in users:
            # The prefix every message from them carries. Not irc_ident(): this runs
            # in translate(), under the server's lock (login_ok is sent under it).
            prefix = role_prefix(roles.get(nick, ""), nick in also)
            name = prefix + (mask(nick) if full else nick)
            if cur and len(cur) + 1 + len(name) > budget:
                lines.append(head + cur)
                cur = ""
            cur = f"{cur} {name}" if cur else name
        if cur:
            lines.append(head + cur)
        lines.append(self.numeric("366", channel, text="End of /NAMES list"))
        return lines

    def joined_lines(self, info: RoomInfo) -> list[str]:
        """What a client sees on joining a room's channel: JOIN, the topic, NAMES."""
        chan = self.chan(info.name)
        names = self.names_lines(info.members, chan, info.roles, "s" in info.modes, info.voiced)
        return [f":{self.prefix()} JOIN {chan}", *self.topic_lines(info, joined=True), *names]

    def topic_lines(self, info: RoomInfo, joined: bool = False) -> list[str]:
        chan = self.chan(info.name)
        if not info.topic:
            return [] if joined else [self.numeric("331", chan, text="No topic is set")]
        lines = [self.numeric("332", chan, text=info.topic)]
        if info.topic_by:
            when = str(int(info.topic_ts or 0))  # 0: the log no longer says when
            lines.append(self.numeric("333", chan, mask(info.topic_by), when))
        return lines

    def motd(self) -> list[str]:
        return [
            self.numeric("375", text=f"- {self.name} Message of the day -"),
            *(self.numeric("372", text=f"- {line}") for line in MOTD),
            self.numeric("376", text="End of /MOTD command."),
        ]

    def translate(self, data: bytes) -> bytes:
        """The server's frames (JSON lines) as IRC lines for this client."""
        # The capabilities that change the lines: tags with time, and with msgid.
        caps = self.caps
        mode = ("server-time" in caps) | ("message-tags" in caps) << 1
        mode |= self.in_lobby << 2  # lobby traffic or none
        if self.registered:
            # The shared translation, looked up inline: every recipient of a message
            # but the first of its mode ends here (docs/PERFORMANCE.md, "The send path").
            hit = self._shared.last.get(mode)
            if hit is not None and hit[0] is data:
                return hit[1]
        out: list[str] = []
        shareable = True
        for event in _events_of(data):
            shareable = self._event(event, out) and shareable
        result = "".join(x + "\r\n" for x in out).encode()
        if shareable and self.registered:
            self._shared.put(data, mode, result)
        return result

    def shared_lines(self, data: bytes) -> bytes | None:
        """The lines of ``data`` if they were rendered for another connection already
        (the shared translation, as :meth:`translate` looks it up); else None. Such
        frames go to many connections (chatroom_server.irc.outbox)."""
        if not self.registered:
            return None
        caps = self.caps
        mode = ("server-time" in caps) | ("message-tags" in caps) << 1 | self.in_lobby << 2
        hit = self._shared.last.get(mode)
        return hit[1] if hit is not None and hit[0] is data else None

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
        notice: bool = False,
    ) -> None:
        head = f":{mask(sender)} {'NOTICE' if notice else 'PRIVMSG'} {target} :"
        tags = self._tags(ts, seq, batch)
        for part in split_text(text, LINE - 2 - len(head.encode())):
            out.append(tags + head + part)

    def _event(self, e: object, out: list[str]) -> bool:
        """Append the lines for one event; False if they are for this client only. An
        answer to this session's request is rendered with what it asked (asked.py)."""
        rid = getattr(e, "id", None)
        asked = NOTHING if rid is None else self.pending.answer(rid)
        handler = _EVENTS.get(type(e))
        if handler is None:
            return True  # pong, replay_done, password_required: nothing to say in IRC
        return handler(self, e, asked, out)

    def _on_broadcast(self, e: Broadcast, asked: Asked, out: list[str]) -> bool:
        if not self.in_lobby and (e.room is None or room_key(e.room) == LOBBY):
            return True  # a guest that has not joined the lobby channel
        self._privmsg(out, e.sender, self.chan(e.room), e.message, e.ts, e.seq, notice=e.notice)
        return True

    def _on_dm(self, e: DirectMessage, asked: Asked, out: list[str]) -> bool:
        self._privmsg(out, e.sender, e.to, e.message, e.ts, e.seq, notice=e.notice)
        return True

    def _on_users_delta(self, e: UsersDelta, asked: Asked, out: list[str]) -> bool:
        if not self.in_lobby:
            return False
        me = username_key(self.nick)
        # A guest's NICK change is in left and joined too: one NICK line (not to the
        # guest itself, told at once by its session).
        was = {o for o, _ in e.renamed} | {n for _, n in e.renamed}
        out += [f":{mask(o)} NICK :{n}" for o, n in e.renamed if username_key(n) != me]
        out += [
            f":{mask(n)} JOIN {self.channel}"
            for n in e.joined
            if username_key(n) != me and n not in was
        ]
        out += [
            f":{mask(n)} QUIT :Left the room"
            for n in e.left
            if username_key(n) != me and n not in was
        ]
        return False  # "not me" differs per client

    def _on_login_ok(self, e: LoginOk, asked: Asked, out: list[str]) -> bool:
        self._welcome(e, out)
        return False

    def _on_user_list(self, e: UserList, asked: Asked, out: list[str]) -> bool:
        if asked.command == "NAMES":
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

    def _on_ack(self, e: Ack, asked: Asked, out: list[str]) -> bool:
        args = asked.args
        if e.command in ("pm", "dm") and args:
            self._echo(e, asked, out)
        if e.command == "part" and e.room:
            why = f" :{args[0]}" if args else ""
            out.append(f":{self.prefix()} PART {self.chan(e.room)}{why}")
        elif e.command == "topic" and e.room:
            topic = args[0] if args else ""
            out.append(f":{self.prefix()} TOPIC {self.chan(e.room)} :{topic}")
        elif e.command == "mode" and e.room:
            out.append(f":{self.prefix()} MODE {self.chan(e.room)} {' '.join(args)}")
        elif e.command in _MODERATION and e.room and e.to:
            if not e.unchanged:  # else an unban or unmute of nobody
                reason = args[1] if e.command == "kick" and len(args) > 1 else None
                out += self.moderation_lines(
                    e.command, self.prefix(), e.room, e.to, reason, e.removed
                )
        elif e.command == "invite" and e.room and e.to:
            chan = self.chan(e.room)
            if e.unchanged:
                out.append(self.numeric("443", e.to, chan, text="is already on channel"))
            else:
                out.append(self.numeric("341", e.to, chan))
        elif e.queued and e.to and asked.command != "NOTICE":  # never a reply to a NOTICE
            out.append(
                f":{self.name} NOTICE {self.nick} :{e.to} is offline; they get your "
                "message when they log in"
            )
        return False

    def _echo(self, e: Ack, asked: Asked, out: list[str]) -> None:
        """echo-message: the client's own PRIVMSG or NOTICE (its text kept with the
        request, session.py), sent back once the server took it: its ack, one per
        message taken, so never twice. Tagged as the others get it (msgid: its seq; its
        time is the ack's, milliseconds after theirs). A DM to oneself is not echoed: it
        reaches this client as its recipient, and that is its once."""
        (text,) = asked.args
        target = e.to or asked.target
        if e.command == "dm" and username_key(target) == username_key(self.nick):
            return
        dest = target if e.command == "dm" else self.chan(e.room)
        notice = asked.command == "NOTICE"
        self._privmsg(out, self.nick, dest, text, time.time(), e.seq, notice=notice)

    def _on_room_info(self, e: RoomInfoReply, asked: Asked, out: list[str]) -> bool:
        cmd = asked.command
        info = e.info
        if cmd == "JOIN":
            if e.joined:  # else a member already: IRC says nothing
                out += self.joined_lines(info)
        elif cmd == "NAMES":
            secret = "s" in info.modes  # 353's "@" (RFC 2812), as on joining
            chan = self.chan(info.name)
            out += self.names_lines(info.members, chan, info.roles, secret, info.voiced)
        elif cmd == "TOPIC":
            out += self.topic_lines(info)
        elif cmd == "MODE":
            params = [info.modes or "+"]
            if info.key is not None and "k" in info.modes:
                params.append(info.key)
            if info.limit is not None and "l" in info.modes:
                params.append(str(info.limit))
            out.append(self.numeric("324", self.chan(info.name), *params))
            if info.created:
                out.append(self.numeric("329", self.chan(info.name), str(int(info.created))))
        return False

    def _on_ban_list(self, e: BanList, asked: Asked, out: list[str]) -> bool:
        chan = self.chan(e.room)
        for b in e.bans:
            # Address bans are listed to server operators only (§Bans by address).
            shown = _ban_mask(b.address or b.user)
            out.append(self.numeric("367", chan, shown, mask(b.by), str(int(b.ts))))
        out.append(self.numeric("368", chan, text="End of channel ban list"))
        return False

    def moderation_lines(
        self,
        action: str,
        by: str,
        room: str,
        user: str,
        reason: str | None,
        removed: bool = False,
        expires: float | None = None,
    ) -> list[str]:
        """A kick, ban or mute (docs/PROTOCOL.md §Moderation) as IRC shows it: KICK, a
        ``+b`` ban mask (and the KICK a ban makes, with its reason and end), or the mute
        extban ``m:``. ``user`` is a network for a ban of an address: ``*!*@net``."""
        chan, why = self.chan(room), f" :{reason}" if reason else ""
        if action == "kick":
            # No reason given: the kicker's nick, as most servers say.
            return [f":{by} KICK {chan} {user}" + (why or f" :{by.partition('!')[0]}")]
        sign = "-" if action.startswith("un") else "+"
        ext = "m:" if action.endswith("mute") else ""
        lines = [f":{by} MODE {chan} {sign}b {ext}{_ban_mask(user)}"]
        if removed:  # a ban removes a member (the room service's rule): a KICK too
            text = "Banned" + (f": {reason}" if reason else "") + _until(expires)
            lines.append(f":{by} KICK {chan} {user} :{text}")
        return lines

    def _on_room_list(self, e: RoomList, asked: Asked, out: list[str]) -> bool:
        wanted = {room_key(c) for c in asked.target.split(",") if c}
        for r in e.rooms:
            chan = self.chan(r.name)
            if wanted and room_key(chan) not in wanted:
                continue
            modes = f"[{r.modes}] " if r.modes else ""
            out.append(self.numeric("322", chan, str(r.count), text=modes + r.topic))
        out.append(self.numeric("323", text="End of /LIST"))
        return False

    def _on_room_event(self, e: RoomEvent, asked: Asked, out: list[str]) -> bool:
        if e.replayed:
            return False  # the welcome burst shows the rooms as they are now
        chan, by = self.chan(e.room), mask(e.by)
        if e.event == "join":
            out.append(f":{by} JOIN {chan}")
        elif e.event == "quit":
            # A guest room's member whose session ended: a client that shows the lobby
            # channel sees that QUIT there (users_delta); else here, once.
            if not self.in_lobby and self._last_quit != (e.by, e.ts):
                self._last_quit = (e.by, e.ts)
                out.append(f":{by} QUIT :{'Quit: ' + e.reason if e.reason else 'Quit'}")
            return False
        elif e.event == "nick" and e.user:
            # A guest room member's NICK change: as a QUIT, seen in the lobby channel
            # (users_delta's renamed) by a client that shows it, else here, once.
            if not self.in_lobby and self._last_quit != (e.by, e.ts):
                self._last_quit = (e.by, e.ts)
                out.append(f":{by} NICK :{e.user}")
            return False
        elif e.event == "part":
            out.append(f":{by} PART {chan}" + (f" :{e.reason}" if e.reason else ""))
        elif e.event == "topic":
            out.append(f":{by} TOPIC {chan} :{e.topic or ''}")
        elif e.event == "mode" and e.modes:
            out.append(" ".join((f":{by} MODE {chan}", e.modes, *e.args)))
        elif e.event == "invite" and e.user:
            if username_key(e.user) == username_key(self.nick):
                out.append(f":{by} INVITE {self.nick} {chan}")
            elif "invite-notify" in self.caps:
                out.append(f":{by} INVITE {e.user} {chan}")
            return False  # whom it names differs per client
        elif e.event in _MODERATION and e.user:
            outside = e.event == "unban" or (e.event == "ban" and not e.removed)
            if outside and username_key(e.user) == username_key(self.nick):
                # Told to the user it names, who is not in the channel (a banned user
                # is in none): IRC says nothing of a channel one is not in.
                return False
            out += self.moderation_lines(
                e.event, by, e.room, e.user, e.reason, e.removed, e.expires
            )
        elif e.event in ("ban", "unban") and e.address:
            # Which address is not said (§Bans by address): no +b mask to keep, a NOTICE.
            did = "banned an address from" if e.event == "ban" else "lifted a ban of an address in"
            why = (f": {e.reason}" if e.reason else "") + _until(e.expires)
            out.append(f":{by} NOTICE {chan} :{e.by} {did} {chan}{why}")
        return True

    def _on_error(self, e: ErrorEvent, asked: Asked, out: list[str]) -> bool:
        error_lines(self, e, asked, out)
        return False

    def _on_bye(self, e: Bye, asked: Asked, out: list[str]) -> bool:
        # A message says more (a kill's "Killed (oper (reason))", docs/IRC.md).
        why = e.message or BYE_TEXT.get(e.reason, e.reason)
        out.append(f"ERROR :Closing link: {HOST} ({why})")
        return True

    def _on_history(self, e: History, asked: Asked, out: list[str]) -> bool:
        self._history(e, asked, out)
        return False

    def _on_replay_truncated(self, e: ReplayTruncated, asked: Asked, out: list[str]) -> bool:
        out.append(f":{self.name} NOTICE {self.nick} :Older messages were not kept")
        return False

    def _welcome(self, e: LoginOk, out: list[str]) -> None:
        old, self.nick = self.nick, e.username
        self.rooms = "rooms" in e.features
        if old not in ("*", e.username):
            out.append(f":{old}!{old}@{HOST} NICK :{e.username}")
        out += [
            self.numeric("001", text=f"Welcome to the chatroom IRC gateway, {mask(e.username)}"),
            self.numeric("002", text=f"Your host is {self.name}, running chatroom"),
            self.numeric("003", text="This server was created " + _STARTED),
            self.numeric("004", self.name, "chatroom", "i", "Hbiklmnost", "bklov"),
            self.numeric(
                "005",
                "NETWORK=chatroom",
                "CASEMAPPING=ascii",
                "CHANTYPES=#",
                "CHANLIMIT=#:",  # the server's --max-rooms-per-user says when it is enough
                f"NICKLEN={32}",
                f"LINELEN={LINE}",
                "PREFIX=(ov)@+",
                text="are supported by this server",
            ),
            # Modern IRC: at most 13 tokens per 005 line (irctest counts them).
            self.numeric(
                "005",
                "CHANMODES=b,k,l,Himnst",
                "EXTBAN=,m",
                "MODES=4",
                "TOPICLEN=390",
                "CHANNELLEN=33",
                "TARGMAX=PRIVMSG:1,NOTICE:1",
                "CHATHISTORY=100",
                "CLIENTTAGDENY=*",  # client-only tags (+name) are not relayed
                "MSGREFTYPES=msgid",
                f"MAXMSG={self.max_message}",
                text="are supported by this server",
            ),
            *self.motd(),
        ]
        # A guest is in the lobby channel once it joins it: its own rooms are what it
        # came for, and the lobby's every arrival and departure would drown them.
        self.in_lobby = self.guest is None
        if self.in_lobby:
            out += [f":{mask(e.username)} JOIN {self.channel}", *self.names_lines(e.users)]
        # Membership is durable: the user is back in every room (as ergo's always-on
        # clients are), each a channel joined.
        for info in e.rooms:
            out += self.joined_lines(info)
        self.registered = True

    def _history(self, e: History, asked: Asked, out: list[str]) -> None:
        target = asked.target or self.channel
        batch = None
        if "batch" in self.caps:
            batch = f"h{time.monotonic_ns() % 10**9}"
            out.append(f"BATCH +{batch} chathistory {target}")
        for m in e.messages:
            dest = self.chan(m.room) if m.kind == "pm" else (m.to or target)
            self._privmsg(out, m.sender, dest, m.message, m.ts, m.seq, batch)
        if batch is not None:
            out.append(f"BATCH -{batch}")


def _events_of(data: bytes) -> Iterator[object]:
    """The events ``data`` encodes: from the frames themselves when they carry them (a
    public message, a DM, their acks: chatroom_server.frames), with the seq the log gave
    them; a users_delta and a room's event and answer carry theirs too. Else decoded: a
    frame made by ``encode()`` alone (a reply, an error, login_ok, a replay page), of
    which each IRC client gets few, and where keeping the event would cost every JSON
    client its memory or time."""
    if type(data) is Frames:
        for event, seq in data.events:
            yield event if seq is None else msgspec.structs.replace(event, seq=seq)
        return
    for line in data.splitlines():
        if not line:
            continue
        try:
            yield decode_event(line)
        except Exception:
            log.exception("cannot translate %r for IRC", line[:200])


def _ban_mask(user: str) -> str:
    """A ban's mask: ``nick!*@*``, or ``*!*@ADDRESS`` for a network (a name has no
    ``/``), a lone address without its /32 or /128."""
    if "/" not in user:
        return f"{user}!*@*"
    net, _, length = user.partition("/")
    return f"*!*@{net}" if length == ("128" if ":" in net else "32") else f"*!*@{user}"


def _until(expires: float | None) -> str:
    if expires is None:
        return ""
    return " (until " + time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expires)) + ")"


# The moderation acks and events shown as KICK and MODE lines (IrcRender.moderation_lines).
_MODERATION: Final = frozenset(("kick", "ban", "unban", "mute", "unmute"))

_STARTED = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

# The server's events and the lines they become (IrcRender._event).
_EVENTS: dict[type, Callable[[IrcRender, Any, Asked, list[str]], bool]] = {
    Broadcast: IrcRender._on_broadcast,
    DirectMessage: IrcRender._on_dm,
    UsersDelta: IrcRender._on_users_delta,
    LoginOk: IrcRender._on_login_ok,
    UserList: IrcRender._on_user_list,
    Ack: IrcRender._on_ack,
    ErrorEvent: IrcRender._on_error,
    Bye: IrcRender._on_bye,
    History: IrcRender._on_history,
    ReplayTruncated: IrcRender._on_replay_truncated,
    RoomInfoReply: IrcRender._on_room_info,
    RoomList: IrcRender._on_room_list,
    BanList: IrcRender._on_ban_list,
    RoomEvent: IrcRender._on_room_event,
}
