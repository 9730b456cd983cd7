"""In, for questions about users and the server that IRC asks and the JSON side has no
command for (docs/IRC.md, "Protocol details"): WHO (a channel, a nick or a mask),
WHOWAS, AWAY, USERHOST, LUSERS and TIME. Each is answered here, on the reader thread,
from what the server shows a transport (:class:`~chatroom_server.irc.session.Core`):
the names online, a room as its ``members`` command shows it, and the IRC session of a
nick (its USER fields and away message).

:class:`Whowas` is the gateway's one piece of shared state of its own: the last IRC
sessions that ended, for WHOWAS. It has its own lock, held only to copy a deque.
"""

from __future__ import annotations

import fnmatch
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from chatroom.protocol import username_key
from chatroom_server.irc.parse import HOST, number, role_prefix
from chatroom_server.irc.replies import Replies

if TYPE_CHECKING:
    from chatroom.rooms import RoomInfo

WHOWAS_KEPT: Final = 1000  # sessions remembered for WHOWAS, the oldest dropped first


@dataclass(frozen=True, slots=True)
class Gone:
    """One IRC session that ended, as WHOWAS shows it."""

    nick: str
    user: str
    realname: str
    ts: float


class Whowas:
    """The last :data:`WHOWAS_KEPT` IRC sessions that ended, newest last. Any thread;
    ``_lock`` guards ``_gone``."""

    def __init__(self, kept: int = WHOWAS_KEPT) -> None:
        self._lock = threading.Lock()
        self._gone: deque[Gone] = deque(maxlen=kept)

    def add(self, gone: Gone) -> None:
        with self._lock:
            self._gone.append(gone)

    def find(self, pattern: str, count: int) -> list[Gone]:
        """The sessions whose nick matches ``pattern`` (``*`` and ``?``, ignoring
        case), newest first, at most ``count`` (0 or less: all)."""
        with self._lock:
            gone = tuple(self._gone)
        pat = pattern.lower()
        found = [g for g in reversed(gone) if fnmatch.fnmatchcase(g.nick.lower(), pat)]
        return found if count <= 0 else found[:count]


class ServerQueries(Replies):
    """The query half of an IRC session (module docstring); the session provides
    what is declared here."""

    channel: str
    caps: set[str]
    away: str | None
    _whowas: Whowas

    def is_lobby(self, chan: str) -> bool:
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers

    def ident(self, name: str) -> tuple[str, str, str | None]:
        """USER's username and real name, and the away message, of ``name``: an IRC
        client's own, a JSON client's name (never away)."""
        peer = self.server.irc_peer(name)
        if peer is None or not peer.user:
            return name, name, None
        return peer.user, peer.realname or name, peer.away

    def channels_of(self, name: str) -> str:
        """WHOIS's 319: ``name``'s channels with their prefixes; the lobby channel if
        they show it (a guest once it joined it); a +s one only to its members."""
        peer = self.server.irc_peer(name)
        chans = [] if peer is not None and not peer.in_lobby else [self.channel]
        me = username_key(self.nick)
        for info in self.server.rooms_of(name):
            if "s" in info.modes and all(username_key(m) != me for m in info.members):
                continue
            chans.append(self._prefix(info, name) + "#" + info.name)
        return " ".join(chans)

    def _invisible(self, name: str) -> bool:
        """User mode +i: a mask leaves the user out (an exact nick does not)."""
        peer = self.server.irc_peer(name)
        if peer is None or not peer.invisible or name == self.nick:
            return False
        # Not from someone who shares a channel with them (Modern IRC).
        me = username_key(self.nick)
        shared = any(
            username_key(m) == me for info in self.server.rooms_of(name) for m in info.members
        )
        return not shared

    def _prefix(self, info: RoomInfo, name: str) -> str:
        """``name``'s prefix in ``info``: ``@+`` for an operator with voice too, to a
        client that asked for multi-prefix; else the highest."""
        voiced = "multi-prefix" in self.caps and name in info.voiced
        return role_prefix(info.roles.get(name, ""), voiced)

    def online(self, nick: str) -> str | None:
        """The canonical spelling of ``nick`` if someone by that name is online."""
        key = username_key(nick)
        return next((n for n in self.server.names() if username_key(n) == key), None)

    # ------------------------------------------------------------------ commands

    def on_away(self, params: list[str]) -> bool:
        """AWAY :text sets, AWAY (or an empty text) clears: 306 / 305."""
        text = params[0] if params else ""
        self.away = text or None
        if self.away is None:
            self.num("305", text="You are no longer marked as being away")
        else:
            self.num("306", text="You have been marked as being away")
        return True

    def away_reply(self, target: str) -> None:
        """301 for a PRIVMSG or WHOIS to a user who is away."""
        name = self.online(target)
        if name is not None:
            away = self.ident(name)[2]
            if away is not None:
                self.num("301", name, text=away)

    def on_userhost(self, params: list[str]) -> bool:
        if not self.need(params, 1, "USERHOST"):
            return True
        found = []
        for nick in params[:5]:
            name = self.online(nick)
            if name is not None:
                user, _, away = self.ident(name)
                found.append(f"{name}={'-' if away else '+'}{user}@{HOST}")
        self.num("302", text=" ".join(found))
        return True

    def on_who(self, params: list[str]) -> bool:
        """WHO #channel (its members, with their prefixes), WHO nick, WHO mask (``*``
        and ``?`` against nicks online); 352 each, then 315 with the mask as sent."""
        target = params[0] if params and params[0] else "*"
        rows: list[tuple[str, str, str]] = []  # channel, nick, role prefix
        if target.startswith("#"):
            if self.is_lobby(target):
                rows = [(self.channel, n, "") for n in self.server.names()]
            else:
                info = self.server.room_info(self.nick, target[1:])
                if info is not None:
                    online = {username_key(n) for n in self.server.names()}
                    rows = [
                        ("#" + info.name, m, self._prefix(info, m))
                        for m in info.members
                        if username_key(m) in online
                    ]
        else:
            pat = target.lower()
            masked = any(c in pat for c in "*?")
            rows = [
                ("*", n, "")
                for n in self.server.names()
                if fnmatch.fnmatchcase(n.lower(), pat) and not (masked and self._invisible(n))
            ]
        lines = []
        opers = self.server.operators_online() if rows else frozenset()
        for chan, n, prefix in rows:
            user, real, away = self.ident(n)
            # H/G here or away, * a server operator, then the channel prefix (RFC 2812).
            flags = ("G" if away else "H") + ("*" if username_key(n) in opers else "") + prefix
            lines.append(
                self.numeric("352", chan, user, HOST, self.name, n, flags, text=f"0 {real}")
            )
        self.reply(*lines, self.numeric("315", target, text="End of WHO list"))
        return True

    def on_whowas(self, params: list[str]) -> bool:
        if not params or not params[0]:
            self.num("431", text="No nickname given")
            return True
        target = params[0]
        count = -1
        if len(params) > 1:
            n = number(params[1].lstrip("-"))
            count = -1 if n is None or params[1].startswith("-") else n
        lines = []
        for g in self._whowas.find(target, count):
            lines.append(self.numeric("314", g.nick, g.user, HOST, "*", text=g.realname))
            when = datetime.fromtimestamp(g.ts, UTC).strftime("%a %b %d %H:%M:%S %Y")
            lines.append(self.numeric("312", g.nick, self.name, text=when))
        if not lines:
            lines.append(self.numeric("406", target, text="There was no such nickname"))
        self.reply(*lines, self.numeric("369", target, text="End of WHOWAS"))
        return True

    def on_lusers(self, params: list[str]) -> bool:
        """LUSERS: 251, 254 and 255, and 265/266 without their optional counts (a
        maximum is not kept)."""
        n = len(self.server.names())
        self.reply(
            self.numeric("251", text=f"There are {n} users and 0 invisible on 1 servers"),
            self.numeric("255", text=f"I have {n} clients and 0 servers"),
            self.numeric("265", text=f"Current local users: {n}"),
            self.numeric("266", text=f"Current global users: {n}"),
        )
        return True

    def on_info(self, params: list[str]) -> bool:
        """INFO: a few 371 lines about the server, then 374."""
        self.reply(
            self.numeric("371", text=f"{self.name}: chatroom, a chat server with an IRC gateway"),
            self.numeric("371", text="IRC clients share rooms with JSON and web clients"),
            self.numeric("374", text="End of INFO list"),
        )
        return True

    def on_time(self, params: list[str]) -> bool:
        now = time.time()
        human = datetime.fromtimestamp(now, UTC).strftime("%A %B %d %Y -- %H:%M:%S UTC")
        self.num("391", self.name, str(int(now)), "0", text=human)
        return True
