"""In, for channels: the IRC commands about channels (JOIN, PART, TOPIC, NAMES, LIST,
MODE, INVITE, KICK), each turned into the room or moderation command it means
(docs/PROTOCOL.md §Rooms, §Moderation): KICK is ``kick``, MODE +b/-b a ban mask
``nick!*@*`` is ``ban``/``unban``, ``*!*@ADDRESS`` (an IP address or CIDR network) a
ban of an address (for server operators: §Bans by address), the extban ``m:nick!*@*``
is ``mute``/``unmute`` (as Ergo's), and the ban list (``MODE #c b``) is ``bans``.

A channel is a room: ``#dev`` is the room ``dev``, and the gateway's own channel
(``--irc-channel``, ``#lobby``) is ``lobby``. Every rule (who may join, with which key,
who may set the topic or modes, invites, limits) is checked once, by the server's room
service, as for a JSON client: nothing here decides anything but the spelling. The
request id says which IRC command a reply or an error belongs to (``JOIN #dev``), so
that :mod:`~chatroom_server.irc.render` answers with the lines and numerics IRC expects.
What is about ``lobby`` alone (its NAMES, its modes, its topic) is answered here, as
before rooms.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import TYPE_CHECKING

from chatroom.moderation import (
    MAX_DURATION,
    BanCommand,
    BansCommand,
    KickCommand,
    MuteCommand,
    UnbanCommand,
    UnmuteCommand,
)
from chatroom.protocol import ClientCommand, UsersCommand, username_key
from chatroom.rooms import (
    InviteCommand,
    JoinCommand,
    MembersCommand,
    ModeCommand,
    PartCommand,
    RoomsCommand,
    TopicCommand,
)
from chatroom_server.irc.parse import number
from chatroom_server.irc.render import IrcRender
from chatroom_server.irc.replies import Replies

if TYPE_CHECKING:
    from chatroom_server.irc.core import Core


class ChannelCommands(IrcRender, Replies):
    """The channel half of an IRC session (module docstring); the session provides
    :meth:`frame` and :meth:`lobby_names`."""

    server: Core

    def frame(self, command: ClientCommand) -> bool:
        raise NotImplementedError

    def lobby_names(self) -> tuple[str, ...]:
        raise NotImplementedError

    def is_lobby(self, chan: str) -> bool:
        return username_key(chan) == username_key(self.channel)

    def room_of(self, chan: str) -> str | None:
        """The room a channel names: None for the lobby channel. The name after ``#``
        is the room service's to judge (``invalid_room``: 476)."""
        return None if self.is_lobby(chan) else chan[1:]

    def on_join(self, params: list[str]) -> bool:
        if not self.need(params, 1, "JOIN"):
            return True
        keys = params[1].split(",") if len(params) > 1 else []
        for i, chan in enumerate(params[0].split(",")):
            if chan == "0" or not chan:
                continue
            if not chan.startswith("#"):
                self.num("476", chan, text="Bad Channel Mask")
            elif self.is_lobby(chan):
                if self.in_lobby and self.guest is not None:
                    continue  # a guest in it already (an account always is)
                self.in_lobby = True
                self.reply(f":{self.prefix()} JOIN {self.channel}")
                self.frame(UsersCommand(id=self.pending.ask("NAMES")))
            else:
                key = keys[i] if i < len(keys) and keys[i] else None
                rid = self.pending.ask("JOIN", chan)
                if not self.frame(JoinCommand(room=chan[1:], key=key, id=rid)):
                    return False
        return True

    def on_part(self, params: list[str]) -> bool:
        if not self.need(params, 1, "PART"):
            return True
        reason = params[1] if len(params) > 1 and params[1] else None
        for chan in params[0].split(","):
            if not chan.startswith("#"):
                self.num("403", chan, text="No such channel")
            elif self.is_lobby(chan) and self.guest is not None and self.in_lobby:
                self.in_lobby = False  # a guest's view of it only: no more of its traffic
                self.reply(f":{self.prefix()} PART {self.channel}")
            elif self.is_lobby(chan):
                self.reply(
                    f":{self.name} NOTICE {self.nick} :{self.channel} is everyone's room; "
                    "QUIT to leave it"
                )
            else:
                rid = self.pending.ask("PART", chan, *([reason] if reason else []))
                if not self.frame(PartCommand(room=chan[1:], reason=reason, id=rid)):
                    return False
        return True

    def on_names(self, params: list[str]) -> bool:
        for chan in params[0].split(",") if params and params[0] else [self.channel]:
            if self.is_lobby(chan):
                # The list the deltas apply to.
                self.frame(UsersCommand(id=self.pending.ask("NAMES")))
            elif not chan.startswith("#") or len(chan) < 2:
                self.num("366", chan, text="End of /NAMES list")
            else:
                self.frame(MembersCommand(room=chan[1:], id=self.pending.ask("NAMES", chan)))
        return True

    def on_topic(self, params: list[str]) -> bool:
        if not self.need(params, 1, "TOPIC"):
            return True
        chan = params[0]
        if not chan.startswith("#"):
            self.num("403", chan, text="No such channel")
            return True
        room = self.room_of(chan) or "lobby"
        if len(params) < 2:
            if self.is_lobby(chan):
                self.num("331", self.channel, text="No topic is set")
                return True
            return self.frame(TopicCommand(room=room, id=self.pending.ask("TOPIC", chan)))
        topic = self.text_param(f"TOPIC {chan}", params[1])
        if topic is None:
            return True
        rid = self.pending.ask("TOPIC", chan, topic)
        return self.frame(TopicCommand(room=room, topic=topic, id=rid))

    def on_list(self, params: list[str]) -> bool:
        wanted = params[0] if params and params[0].startswith("#") else ""
        lines = [self.numeric("321", "Channel", text="Users  Name")]
        # The lobby channel is listed to whoever is in it: to a guest once it joined.
        shown = self.in_lobby and (not wanted or any(self.is_lobby(c) for c in wanted.split(",")))
        if shown:
            lines.append(self.numeric("322", self.channel, str(len(self.lobby_names())), text=""))
        self.reply(*lines)
        return self.frame(RoomsCommand(id=self.pending.ask("LIST", wanted)))

    def on_channel_mode(self, chan: str, params: list[str]) -> bool:
        """MODE for a channel: read (324), bans (+b/-b, the list), or a change, which
        the room service checks."""
        room = self.room_of(chan)
        if len(params) > 1 and set(params[1]) - set("+-") == {"b"}:
            return self.on_bans(chan, room, params[1], params[2:])
        if len(params) < 2:
            if room is None:
                self.num("324", self.channel, "+nt")
                return True
            return self.frame(ModeCommand(room=room, id=self.pending.ask("MODE", chan)))
        modes, args = params[1], _drop_unset_key(params[1], params[2:])
        change = modes
        if room is None and set(change) <= set("+n"):
            # +n (no messages from outside) is how lobby is, with everyone in it.
            self.reply(f":{self.prefix()} " + " ".join(("MODE", chan, modes, *args)))
            return True
        if self.guest is not None and room is not None:
            # A guest's channels hold only users online: +o/+v of a nick nobody has is
            # 401 (ERR_NOSUCHNICK) once the channel is known to exist (else 403).
            online = {username_key(n) for n in self.lobby_names()}
            missing = [a for a in _member_args(change, args) if username_key(a) not in online]
            if missing and self.server.room_info(self.nick, room) is not None:
                self.num("401", missing[0], text="No such nick/channel")
                return True
        rid = self.pending.ask("MODE", chan, modes, *args)
        return self.frame(ModeCommand(room=room or "lobby", modes=change, args=args, id=rid))

    def on_bans(self, chan: str, room: str | None, modes: str, masks: list[str]) -> bool:
        """``MODE #c +b mask`` / ``-b mask``: a ban or mute for each mask; ``b`` or
        ``+b`` alone: the list (367/368)."""
        if not masks:
            if room is None:
                self.num("368", chan, text="End of channel ban list")
                return True
            return self.frame(BansCommand(room=room, id=self.pending.ask("MODE", chan, "b")))
        add = not modes.startswith("-")
        for given in masks:
            minutes, m = _timed(given)
            if minutes is not None and not 1 <= minutes <= MAX_DURATION // 60:
                why = f"a timed ban is ~t:MINUTES:mask, MINUTES 1 to {MAX_DURATION // 60}"
                self.num("696", chan, "b", given, text=why)
                continue
            duration = minutes * 60 if minutes is not None and add else None
            mute, nick = _mask_nick(m)
            address = None if mute or nick is not None else _mask_address(m)
            if nick is None and address is None:
                why = "a ban mask is nick!*@* or *!*@ADDRESS[/PREFIX] (or m:nick!*@* to mute)"
                self.num("696", chan, "b", given, text=why)
                continue
            rid = self.pending.ask("MODE", chan, f"{'+' if add else '-'}b", m)
            target = room or "lobby"
            cmd: ClientCommand
            if address is not None:  # the room service says whether it may, and if valid
                cmd = (
                    BanCommand(room=target, address=address, duration=duration, id=rid)
                    if add
                    else UnbanCommand(room=target, address=address, id=rid)
                )
            elif nick is None:
                continue
            elif mute:
                cmd = (
                    MuteCommand(room=target, user=nick, duration=duration, id=rid)
                    if add
                    else UnmuteCommand(room=target, user=nick, id=rid)
                )
            else:
                cmd = (
                    BanCommand(room=target, user=nick, duration=duration, id=rid)
                    if add
                    else UnbanCommand(room=target, user=nick, id=rid)
                )
            if not self.frame(cmd):
                return False
        return True

    def on_kick(self, params: list[str]) -> bool:
        if not self.need(params, 2, "KICK"):
            return True
        chan = params[0]
        if not chan.startswith("#"):
            self.num("403", chan, text="No such channel")
            return True
        reason = self.text_param(f"KICK {chan} {params[1]}", params[2] if len(params) > 2 else "")
        if reason is None:
            return True
        reason = reason or None  # none given, or formatting alone
        room = self.room_of(chan) or "lobby"
        for nick in params[1].split(","):
            rid = self.pending.ask("KICK", chan, nick, *([reason] if reason else []))
            if not self.frame(KickCommand(room=room, user=nick, reason=reason, id=rid)):
                return False
        return True

    def on_invite(self, params: list[str]) -> bool:
        if not self.need(params, 2, "INVITE"):
            return True
        nick, chan = params[0], params[1]
        if not chan.startswith("#") or self.is_lobby(chan):
            # Everyone is in lobby always: nothing to invite to.
            self.num("443", nick, chan, text="is already on channel")
            return True
        rid = self.pending.ask("INVITE", chan, nick)
        return self.frame(InviteCommand(room=chan[1:], user=nick, id=rid))


def _timed(mask: str) -> tuple[int | None, str]:
    """(the minutes, the mask) of UnrealIRCd's timed ban ``~t:MINUTES:mask`` (also
    spelled ``~time:``), which IRC has no other way to say (docs/IRC.md, "Bans with an
    end"); (None, ``mask``) for a mask without it. Minutes that are no number are -1:
    the caller refuses them."""
    for prefix in ("~t:", "~time:"):
        if mask.startswith(prefix):
            minutes, _, rest = mask[len(prefix) :].partition(":")
            n = number(minutes)
            return (n if n is not None and rest else -1), rest
    return None, mask


def _mask_nick(mask: str) -> tuple[bool, str | None]:
    """(a mute extban, the nick) of ``nick``, ``nick!*@*`` or ``m:nick!*@*``; the nick
    is None for a mask that names more than one user: bans are by name."""
    mute = mask.startswith("m:")
    mask = mask[2:] if mute else mask
    nick, bang, rest = mask.partition("!")
    if (bang and rest != "*@*") or not nick or any(c in nick for c in "*?@!:"):
        return mute, None
    return mute, nick


def _mask_address(mask: str) -> str | None:
    """The address or network of ``*!*@ADDRESS`` (or ``*@ADDRESS``), as given (the room
    service checks it: host bits set, too wide); None for another mask: a host name, or
    a wildcard in the host, names no network."""
    nick, bang, rest = mask.partition("!")
    user, at, host = (rest if bang else mask).partition("@")
    if (bang and nick != "*") or not at or user != "*":
        return None
    try:
        ipaddress.ip_network(host, strict=False)
    except ValueError:
        return None
    return host


def _member_args(modes: str, args: Sequence[str]) -> list[str]:
    """The arguments of ``modes`` that name a member (+o/-o, +v/-v)."""
    out, add, i = [], True, 0
    for c in modes:
        if c in "+-":
            add = c == "+"
        elif c in "ov" or (add and c in "kl"):
            if c in "ov" and i < len(args):
                out.append(args[i])
            i += 1
    return out


def _drop_unset_key(modes: str, args: list[str]) -> tuple[str, ...]:
    """The arguments of ``modes`` without the key IRC clients send after ``-k`` (RFC
    2812: ``MODE #c -k key``), which the room's ``mode`` command does not take. Only
    when there is one more argument than the room's letters take: ``-k+l 5`` stays."""
    need, add = 0, True
    unset: list[int] = []
    for c in modes:
        if c in "+-":
            add = c == "+"
        elif c in "ov" or (add and c in "kl"):
            need += 1
        elif c == "k":
            unset.append(need + len(unset))  # where its key is, IRC's way
    if not unset or len(args) <= need:
        return tuple(args)
    return tuple(a for i, a in enumerate(args) if i not in unset[: len(args) - need])
